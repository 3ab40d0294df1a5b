// Plain data of the AnyMoLe wire contract (proto/anymole/v1/anymole.proto), free of gRPC, protobuf and Unreal
// types, so that the editor module and the tests see only these. Everything here is in the server's canonical
// space (glTF: right-handed, +Y up, +Z forward, metres; quaternions x, y, z, w); UnrealSpace.h converts.
// Packed arrays follow the proto: F * J * 4 rotations frame-major, then joint, then component.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

// Unreal's build defines ANYMOLECLIENT_API (dllexport / dllimport in modular editor builds); elsewhere it is empty.
#ifndef ANYMOLECLIENT_API
#define ANYMOLECLIENT_API
#endif

namespace anymole {

// The protocol this client was built against; the handshake refuses a server of another major version.
constexpr uint32_t kProtocolMajor = 1;
constexpr uint32_t kProtocolMinor = 2;
// gRPC C++'s default receive limit; the client keeps it (Unreal processes share one gRPC configuration).
constexpr int kDefaultReceiveLimitBytes = 4 * 1024 * 1024;

// google.rpc.Code values, as gRPC reports them.
enum class StatusCode : int {
    Ok = 0, Cancelled = 1, Unknown = 2, InvalidArgument = 3, DeadlineExceeded = 4, NotFound = 5,
    AlreadyExists = 6, PermissionDenied = 7, ResourceExhausted = 8, FailedPrecondition = 9, Aborted = 10,
    OutOfRange = 11, Unimplemented = 12, Internal = 13, Unavailable = 14, DataLoss = 15, Unauthenticated = 16,
};

// The outcome of a call: the core is built without exceptions, so every call returns one of these.
struct ANYMOLECLIENT_API Status {
    StatusCode code = StatusCode::Ok;
    std::string message;  // the server's text, verbatim
    std::string field;    // the request field a BadRequest violation names, e.g. "keyframes[0].rotations"

    bool ok() const { return code == StatusCode::Ok; }
    // "INVALID_ARGUMENT: keyframes[0].rotations: not unit length" (for logs and the editor's error text).
    std::string ToString() const;
};

ANYMOLECLIENT_API const char* StatusCodeName(StatusCode code);

struct ProtocolVersion {
    uint32_t major = kProtocolMajor;
    uint32_t minor = kProtocolMinor;
};

struct MethodInfo {
    std::string name;
    std::string description;
    std::vector<std::string> presets;  // the first one is the default
    bool available = false;
    std::string unavailable_reason;    // shown next to a disabled method
    bool sends_previews = false;
    enum class Output { Unspecified, Motion, Video, MotionAndVideo } output = Output::Unspecified;
    float min_context_seconds = 0.f;  // 0: one frame is enough
    float key_spacing_seconds = 0.f;   // not 0: key j lies exactly (j + 1) * this after the last context frame
    float max_gap_seconds = 0.f;       // 0: no limit but Limits::max_frames
};

struct Limits {
    uint64_t max_message_bytes = 0;
    uint64_t max_character_bytes = 0;
    uint32_t upload_chunk_bytes = 0;
    uint32_t max_joints = 0;
    uint32_t max_frames = 0;
    uint32_t max_keyframes = 0;
    uint32_t max_queue = 0;
    float quaternion_norm_tolerance = 0.f;
};

// What GetServerInfo answered.
struct ANYMOLECLIENT_API ServerInfo {
    std::string server_version;
    ProtocolVersion protocol;
    std::vector<MethodInfo> methods;
    std::vector<std::string> devices;
    Limits limits;
    bool auth_required = false;

    const MethodInfo* FindMethod(const std::string& name) const;
};

// A joint hierarchy with its bind pose, parent-relative, canonical space.
struct Skeleton {
    std::vector<std::string> joint_names;
    std::vector<int32_t> parent_indices;   // -1 for a root; otherwise an earlier joint
    std::vector<float> rest_translations;  // J * 3, metres
    std::vector<float> rest_rotations;     // J * 4, unit xyzw

    size_t NumJoints() const { return joint_names.size(); }
};

struct Texture {
    std::string mime_type;  // "image/png" or "image/jpeg"
    std::string data;       // the encoded file
};

// How one section looks: base colour factor x texture x vertex colour.
struct Material {
    std::string name;
    std::vector<float> base_color;  // 4 RGBA or empty
    int32_t texture = -1;           // index into SkinnedMesh::textures, -1 for none
};

// A skinned triangle mesh in bind pose, canonical space.
struct SkinnedMesh {
    std::vector<float> positions;  // V * 3, metres
    std::vector<float> normals;    // V * 3 or empty
    std::vector<float> uvs;        // V * 2 (v grows downwards from the top) or empty
    std::vector<uint32_t> triangle_indices;  // T * 3, counter-clockwise seen from the front
    uint32_t influences_per_vertex = 0;      // K
    std::vector<uint32_t> joint_indices;     // V * K
    std::vector<float> joint_weights;        // V * K, summing to 1 per vertex
    std::vector<float> inverse_bind_matrices;  // J * 16, column-major (glTF)
    std::vector<float> base_color;           // 4 RGBA or empty (the one material when `materials` is empty)
    Texture texture;                         // empty data: none
    std::vector<float> colors;               // V * 4 RGBA vertex colours or empty
    std::vector<Material> materials;         // one per section / material slot
    std::vector<uint32_t> triangle_materials;  // T: each triangle's index into `materials`, or empty
    std::vector<Texture> textures;           // the distinct images `materials` refer to
};

struct CharacterAsset {
    std::string name;
    Skeleton skeleton;
    bool has_mesh = false;
    SkinnedMesh mesh;
};

enum class CharacterFormat : int { Proto = 1, Glb = 2, Fbx = 3, Bvh = 4 };

struct UploadResult {
    std::string character_id;  // "sha256:<hex>"
    bool cached = false;       // the server already held these bytes
    Skeleton skeleton;         // the joint order every job must use
    uint32_t vertex_count = 0;
    std::string name;
};

// A clip on a regular grid.
struct Clip {
    float fps = 30.f;
    uint32_t frame_count = 0;
    std::vector<float> rotations;          // F * J * 4
    std::vector<float> root_translations;  // F * 3
    std::vector<float> translations;       // F * J * 3 or empty (then non-root joints keep their rest offset)
};

struct Keyframe {
    uint32_t frame = 0;                   // on the job timeline (context frame 0 = 0)
    std::vector<float> rotations;         // J * 4: the evaluated full pose of every joint
    std::vector<float> root_translation;  // 3
    std::vector<float> translations;      // J * 3 or empty
};

struct JobRequest {
    std::string character_id;
    Clip context;
    std::vector<Keyframe> keyframes;
    uint32_t total_frames = 0;  // 0: last key + 1
    std::string method;         // empty: "interp"
    std::string preset;
    uint32_t chunk_frames = 0;
    uint64_t seed = 0;
    std::string label;
    // Stored with the job and echoed by ListJobs, so that an editor finds its jobs again after a restart.
    std::map<std::string, std::string> client_tags;
};

enum class JobState : int { Unspecified = 0, Queued, Running, Completed, Failed, Cancelled, Interrupted };

struct MotionChunk {
    uint32_t frame_start = 0;
    uint32_t frame_count = 0;
    std::vector<float> rotations;          // frame_count * J * 4
    std::vector<float> root_translations;  // frame_count * 3
    std::vector<float> translations;       // frame_count * J * 3 or empty
    bool is_final = false;
};

// One job event. Only the fields of `kind` are set; kinds a newer server adds arrive as Unknown and are
// skipped by Session::Watch, so an old plugin keeps working.
struct JobEvent {
    enum class Kind { Unknown, Queued, Progress, Preview, Motion, Completed, Failed, Cancelled, Interrupted };

    std::string job_id;
    uint64_t seq = 0;
    double time_unix = 0;
    Kind kind = Kind::Unknown;

    uint32_t queue_position = 0;  // Queued
    std::string stage;            // Progress, Preview
    float stage_fraction = 0.f;   // Progress
    float fraction = 0.f;         // Progress
    bool has_eta = false;         // Progress
    double eta_seconds = 0;       // Progress
    std::string message;          // Progress note; Failed message; Cancelled / Interrupted reason
    uint32_t frame = 0;           // Preview
    uint32_t view = 0;            // Preview
    std::string mime_type;        // Preview
    std::string image;            // Preview: the encoded frame
    uint32_t width = 0, height = 0;  // Preview
    MotionChunk motion;           // Motion
    std::string summary;          // Completed
    uint32_t total_frames = 0;    // Completed
    std::map<std::string, double> metrics;  // Completed
    int32_t failed_code = 0;      // Failed: a google.rpc.Code
    std::string failed_field;     // Failed: the request field to blame

    bool IsTerminal() const {
        return kind == Kind::Completed || kind == Kind::Failed || kind == Kind::Cancelled ||
               kind == Kind::Interrupted;
    }
};

struct JobSummary {
    std::string job_id;
    JobState state = JobState::Unspecified;
    std::string character_id, method, preset, label;
    double created_unix = 0;
    uint32_t position = 0;
    uint64_t last_seq = 0;
    uint32_t total_frames = 0;
    std::map<std::string, std::string> client_tags;
};

// A completed job's result timeline (context followed by the filled frames) and the optional file.
struct Result {
    Clip motion;
    std::string file;
    std::string file_name;
};

}  // namespace anymole
