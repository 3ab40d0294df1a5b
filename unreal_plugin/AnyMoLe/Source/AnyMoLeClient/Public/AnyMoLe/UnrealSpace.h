// The one mapping between Unreal space and the server's canonical space (ARCHITECTURE.md), for points,
// rotations, matrices, skeletons, meshes and motion. Unreal: left-handed, Z up, X forward, centimetres.
// Canonical: glTF's right-handed, Y up, Z forward, metres. As Epic's glTF importer maps them:
//   position   canonical (x, y, z)      -> Unreal 100 * (x, z, y)
//   rotation   canonical (x, y, z, w)   -> Unreal (-x, -z, -y, w)
// so that a glTF character imported into Unreal sends back the numbers the server reads from the file. The
// map is a reflection (swap Y and Z) and a scale: it is its own inverse up to the scale, and it flips
// handedness, so triangle winding is reversed to keep faces facing out.
// Unreal-side values are doubles, like UE5's FVector / FQuat / FTransform, so canonical -> Unreal -> canonical
// is exact bit for bit (x * 100 / 100 is exact in double for every float x).
// The types below mirror FVector, FQuat, FTransform and FMatrix without the engine; the editor module
// copies them field by field.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "AnyMoLe/Types.h"

namespace anymole::ue {

constexpr double kCentimetresPerMetre = 100.0;

struct Vector {
    double X = 0, Y = 0, Z = 0;
};
struct Quat {
    double X = 0, Y = 0, Z = 0, W = 1;
};
struct Transform {
    Quat Rotation;
    Vector Translation;
    Vector Scale3D{1, 1, 1};
};
// FMatrix layout: M[row][col] = m[row * 4 + col], row vectors (p' = p * M), translation in row 3.
using Matrix = std::array<double, 16>;

// Single values. Positions scale, directions (normals) do not.
ANYMOLECLIENT_API Vector PositionToUnreal(const float* xyz);
ANYMOLECLIENT_API void PositionFromUnreal(const Vector& p, float* xyz);
ANYMOLECLIENT_API Vector DirectionToUnreal(const float* xyz);
ANYMOLECLIENT_API void DirectionFromUnreal(const Vector& d, float* xyz);
ANYMOLECLIENT_API Quat RotationToUnreal(const float* xyzw);
ANYMOLECLIENT_API void RotationFromUnreal(const Quat& q, float* xyzw);
// A canonical column-major (glTF) 4x4 affine matrix as Unreal's FMatrix of the same map in Unreal space
// (S * M * S^-1 with S the position map), and back.
ANYMOLECLIENT_API Matrix MatrixToUnreal(const float* gltf16);
ANYMOLECLIENT_API void MatrixFromUnreal(const Matrix& m, float* gltf16);

// What FReferenceSkeleton holds: raw bone names, parents (INDEX_NONE = -1 for a root) and the local bind pose.
struct SkeletonUe {
    std::vector<std::string> names;
    std::vector<int32_t> parents;
    std::vector<Transform> ref_pose;
};
ANYMOLECLIENT_API SkeletonUe SkeletonToUnreal(const Skeleton& s);
// Refuses parents that do not come first and bind scales other than 1 (the contract has no scale: bake it into
// the translations), naming the bone.
ANYMOLECLIENT_API Status SkeletonFromUnreal(const SkeletonUe& s, Skeleton* out);

// A skinned LOD0 mesh in Unreal space, joint indices already mapped through each section's bone map.
struct MeshUe {
    std::vector<Vector> positions;
    std::vector<Vector> normals;        // or empty
    std::vector<float> uvs;             // V * 2; Unreal and glTF both count v down from the top
    std::vector<uint32_t> triangle_indices;  // Unreal winding (reversed from canonical)
    uint32_t influences_per_vertex = 0;
    std::vector<uint32_t> joint_indices;
    std::vector<float> joint_weights;   // each vertex's sum to 1 (divide UE's uint16 weights by 65535)
    std::vector<Matrix> inverse_bind_matrices;  // one per joint
    std::vector<float> base_color;
    Texture texture;
    std::vector<float> colors;                 // V * 4 RGBA, unchanged
    std::vector<Material> materials;           // one per section
    std::vector<uint32_t> triangle_materials;  // per triangle, same order as canonical
    std::vector<Texture> textures;
};
ANYMOLECLIENT_API MeshUe MeshToUnreal(const SkinnedMesh& m);
ANYMOLECLIENT_API Status MeshFromUnreal(const MeshUe& m, SkinnedMesh* out);

// Local (parent-space) bone transforms of a clip, frame-major: keys[frame * num_joints + joint], as
// IAnimationDataModel::GetBoneTrackTransforms gives them per bone.
struct MotionUe {
    double fps = 30;
    uint32_t frame_count = 0;
    size_t num_joints = 0;
    std::vector<Transform> keys;

    const Transform& Key(uint32_t frame, size_t joint) const { return keys[frame * num_joints + joint]; }
};
// Non-root joints without clip translations take their rest translation from `rest`.
ANYMOLECLIENT_API MotionUe ClipToUnreal(const Clip& clip, const Skeleton& rest);
// With `with_translations`, every joint's translation goes out (Clip::translations); otherwise only the root's.
ANYMOLECLIENT_API Status ClipFromUnreal(const MotionUe& motion, bool with_translations, Clip* out);
// The evaluated full pose of `frame` as a keyframe at `timeline_frame` of the job.
ANYMOLECLIENT_API Status KeyframeFromUnreal(const MotionUe& motion, uint32_t frame, uint32_t timeline_frame, bool with_translations,
                          Keyframe* out);
// Whether a non-root joint moves away from its bind translation (more than `tolerance_cm`): then the clip must
// send every joint's translation.
ANYMOLECLIENT_API bool AnimatesTranslations(const MotionUe& motion, const SkeletonUe& skeleton, double tolerance_cm = 1e-3);

// Packing between Unreal's per-bone key arrays (what SetBoneTrackKeys takes) and the frame-major layout.
ANYMOLECLIENT_API std::vector<Transform> BoneTrack(const MotionUe& motion, size_t joint);
ANYMOLECLIENT_API Status MotionFromBoneTracks(double fps, const std::vector<std::vector<Transform>>& tracks, MotionUe* out);

}  // namespace anymole::ue
