#include "ProtoConvert.h"

#include <google/protobuf/io/coded_stream.h>

namespace anymole::proto {
namespace {

template <typename T>
std::vector<T> Vec(const google::protobuf::RepeatedField<T>& f) {
    return std::vector<T>(f.begin(), f.end());
}

template <typename T>
void Put(const std::vector<T>& v, google::protobuf::RepeatedField<T>* f) {
    f->Assign(v.begin(), v.end());
}

// The length-delimited field `wanted` of each entry of a serialised message, in order. The google.rpc messages
// that carry error details (Status, Any, BadRequest; proto/google/rpc) are read this way, by field number: the
// three fields needed do not warrant generating and linking three more .proto files into every editor build.
std::vector<std::string> Fields(const std::string& bytes, uint32_t wanted) {
    std::vector<std::string> out;
    google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                                              static_cast<int>(bytes.size()));
    while (uint32_t tag = in.ReadTag()) {
        const uint32_t number = tag >> 3, wire = tag & 7;
        if (wire == 2) {  // length-delimited
            uint32_t len = 0;
            std::string value;
            if (!in.ReadVarint32(&len) || !in.ReadString(&value, static_cast<int>(len))) break;
            if (number == wanted) out.push_back(std::move(value));
        } else if (wire == 0) {
            uint64_t ignored = 0;
            if (!in.ReadVarint64(&ignored)) break;
        } else if (wire == 1) {
            uint64_t ignored = 0;
            if (!in.ReadLittleEndian64(&ignored)) break;
        } else if (wire == 5) {
            uint32_t ignored = 0;
            if (!in.ReadLittleEndian32(&ignored)) break;
        } else {
            break;
        }
    }
    return out;
}

}  // namespace

void ToProto(const Skeleton& in, pb::Skeleton* out) {
    for (const auto& n : in.joint_names) out->add_joint_names(n);
    Put(in.parent_indices, out->mutable_parent_indices());
    Put(in.rest_translations, out->mutable_rest_translations());
    Put(in.rest_rotations, out->mutable_rest_rotations());
}

void ToProto(const CharacterAsset& in, pb::CharacterAsset* out) {
    out->set_name(in.name);
    ToProto(in.skeleton, out->mutable_skeleton());
    if (!in.has_mesh) return;
    const SkinnedMesh& m = in.mesh;
    pb::SkinnedMesh* o = out->mutable_mesh();
    Put(m.positions, o->mutable_positions());
    Put(m.normals, o->mutable_normals());
    Put(m.uvs, o->mutable_uvs());
    Put(m.triangle_indices, o->mutable_triangle_indices());
    o->set_influences_per_vertex(m.influences_per_vertex);
    Put(m.joint_indices, o->mutable_joint_indices());
    Put(m.joint_weights, o->mutable_joint_weights());
    Put(m.inverse_bind_matrices, o->mutable_inverse_bind_matrices());
    Put(m.base_color, o->mutable_base_color());
    if (!m.texture.data.empty()) {
        o->mutable_texture()->set_mime_type(m.texture.mime_type);
        o->mutable_texture()->set_data(m.texture.data);
    }
    Put(m.colors, o->mutable_colors());
    for (const Material& mat : m.materials) {
        pb::Material* om = o->add_materials();
        om->set_name(mat.name);
        Put(mat.base_color, om->mutable_base_color());
        if (mat.texture >= 0) om->set_texture(static_cast<uint32_t>(mat.texture));
    }
    Put(m.triangle_materials, o->mutable_triangle_materials());
    for (const Texture& t : m.textures) {
        pb::Texture* ot = o->add_textures();
        ot->set_mime_type(t.mime_type);
        ot->set_data(t.data);
    }
}

void ToProto(const Clip& in, pb::Clip* out) {
    out->set_fps(in.fps);
    out->set_frame_count(in.frame_count);
    Put(in.rotations, out->mutable_rotations());
    Put(in.root_translations, out->mutable_root_translations());
    Put(in.translations, out->mutable_translations());
}

void ToProto(const JobRequest& in, pb::InbetweenRequest* out) {
    out->set_character_id(in.character_id);
    ToProto(in.context, out->mutable_context());
    for (const Keyframe& k : in.keyframes) {
        pb::Keyframe* o = out->add_keyframes();
        o->set_frame(k.frame);
        Put(k.rotations, o->mutable_rotations());
        Put(k.root_translation, o->mutable_root_translation());
        Put(k.translations, o->mutable_translations());
    }
    out->set_total_frames(in.total_frames);
    out->set_method(in.method);
    out->set_preset(in.preset);
    out->set_chunk_frames(in.chunk_frames);
    out->set_seed(in.seed);
    out->set_label(in.label);
    out->mutable_client_tags()->insert(in.client_tags.begin(), in.client_tags.end());
}

Skeleton FromProto(const pb::Skeleton& in) {
    Skeleton s;
    s.joint_names.assign(in.joint_names().begin(), in.joint_names().end());
    s.parent_indices = Vec(in.parent_indices());
    s.rest_translations = Vec(in.rest_translations());
    s.rest_rotations = Vec(in.rest_rotations());
    return s;
}

CharacterAsset FromProto(const pb::CharacterAsset& in) {
    CharacterAsset c;
    c.name = in.name();
    c.skeleton = FromProto(in.skeleton());
    c.has_mesh = in.has_mesh();
    if (!c.has_mesh) return c;
    const pb::SkinnedMesh& m = in.mesh();
    c.mesh.positions = Vec(m.positions());
    c.mesh.normals = Vec(m.normals());
    c.mesh.uvs = Vec(m.uvs());
    c.mesh.triangle_indices = Vec(m.triangle_indices());
    c.mesh.influences_per_vertex = m.influences_per_vertex();
    c.mesh.joint_indices = Vec(m.joint_indices());
    c.mesh.joint_weights = Vec(m.joint_weights());
    c.mesh.inverse_bind_matrices = Vec(m.inverse_bind_matrices());
    c.mesh.base_color = Vec(m.base_color());
    c.mesh.texture.mime_type = m.texture().mime_type();
    c.mesh.texture.data = m.texture().data();
    c.mesh.colors = Vec(m.colors());
    for (const pb::Material& pm : m.materials()) {
        c.mesh.materials.push_back(Material{pm.name(), Vec(pm.base_color()),
                                            pm.has_texture() ? static_cast<int32_t>(pm.texture()) : -1});
    }
    c.mesh.triangle_materials = Vec(m.triangle_materials());
    for (const pb::Texture& t : m.textures()) c.mesh.textures.push_back(Texture{t.mime_type(), t.data()});
    return c;
}

Clip FromProto(const pb::Clip& in) {
    Clip c;
    c.fps = in.fps();
    c.frame_count = in.frame_count();
    c.rotations = Vec(in.rotations());
    c.root_translations = Vec(in.root_translations());
    c.translations = Vec(in.translations());
    return c;
}

ServerInfo FromProto(const pb::GetServerInfoResponse& in) {
    ServerInfo s;
    s.server_version = in.server_version();
    s.protocol.major = in.protocol().major();
    s.protocol.minor = in.protocol().minor();
    const pb::Capabilities& caps = in.capabilities();
    for (const pb::MethodInfo& m : caps.methods()) {
        MethodInfo mi;
        mi.name = m.name();
        mi.description = m.description();
        mi.presets.assign(m.presets().begin(), m.presets().end());
        mi.available = m.available();
        mi.unavailable_reason = m.unavailable_reason();
        mi.sends_previews = m.sends_previews();
        mi.output = m.output() <= pb::METHOD_OUTPUT_MOTION_AND_VIDEO ? static_cast<MethodInfo::Output>(m.output())
                                                                     : MethodInfo::Output::Unspecified;
        mi.min_context_seconds = m.min_context_seconds();
        mi.key_spacing_seconds = m.key_spacing_seconds();
        mi.max_gap_seconds = m.max_gap_seconds();
        s.methods.push_back(std::move(mi));
    }
    for (const pb::DeviceInfo& d : caps.devices()) s.devices.push_back(d.name());
    const pb::Limits& l = caps.limits();
    s.limits = Limits{l.max_message_bytes(), l.max_character_bytes(), l.upload_chunk_bytes(), l.max_joints(),
                      l.max_frames(),        l.max_keyframes(),       l.max_queue(),          l.quaternion_norm_tolerance()};
    s.auth_required = caps.auth_required();
    return s;
}

MotionChunk FromProto(const pb::MotionChunk& in) {
    MotionChunk c;
    c.frame_start = in.frame_start();
    c.frame_count = in.frame_count();
    c.rotations = Vec(in.rotations());
    c.root_translations = Vec(in.root_translations());
    c.translations = Vec(in.translations());
    c.is_final = in.is_final();
    return c;
}

JobEvent FromProto(const pb::JobEvent& in) {
    JobEvent e;
    e.job_id = in.job_id();
    e.seq = in.seq();
    e.time_unix = in.time_unix();
    using K = JobEvent::Kind;
    switch (in.kind_case()) {
        case pb::JobEvent::kQueued:
            e.kind = K::Queued;
            e.queue_position = in.queued().position();
            break;
        case pb::JobEvent::kProgress: {
            const pb::Progress& p = in.progress();
            e.kind = K::Progress;
            e.stage = p.stage();
            e.stage_fraction = p.stage_fraction();
            e.fraction = p.fraction();
            e.has_eta = p.has_eta_seconds();
            e.eta_seconds = p.eta_seconds();
            e.message = p.message();
            break;
        }
        case pb::JobEvent::kPreview: {
            const pb::Preview& p = in.preview();
            e.kind = K::Preview;
            e.stage = p.stage();
            e.frame = p.frame();
            e.view = p.view();
            e.mime_type = p.mime_type();
            e.image = p.data();
            e.width = p.width();
            e.height = p.height();
            break;
        }
        case pb::JobEvent::kMotion:
            e.kind = K::Motion;
            e.motion = FromProto(in.motion());
            break;
        case pb::JobEvent::kCompleted:
            e.kind = K::Completed;
            e.summary = in.completed().summary();
            e.total_frames = in.completed().total_frames();
            e.metrics.insert(in.completed().metrics().begin(), in.completed().metrics().end());
            break;
        case pb::JobEvent::kFailed:
            e.kind = K::Failed;
            e.failed_code = in.failed().code();
            e.message = in.failed().message();
            e.failed_field = in.failed().field();
            break;
        case pb::JobEvent::kCancelled:
            e.kind = K::Cancelled;
            e.message = in.cancelled().reason();
            break;
        case pb::JobEvent::kInterrupted:
            e.kind = K::Interrupted;
            e.message = in.interrupted().reason();
            break;
        default:  // a kind added after this client was built
            e.kind = K::Unknown;
    }
    return e;
}

JobSummary FromProto(const pb::JobSummary& in) {
    JobSummary j;
    j.job_id = in.job_id();
    j.state = static_cast<JobState>(in.state() <= pb::JOB_STATE_INTERRUPTED ? in.state() : 0);
    j.character_id = in.character_id();
    j.method = in.method();
    j.preset = in.preset();
    j.label = in.label();
    j.created_unix = in.created_unix();
    j.position = in.position();
    j.last_seq = in.last_seq();
    j.total_frames = in.total_frames();
    j.client_tags.insert(in.client_tags().begin(), in.client_tags().end());
    return j;
}

Status FromGrpc(const grpc::Status& status) {
    Status s;
    s.code = static_cast<StatusCode>(status.error_code());
    s.message = status.error_message();
    // google.rpc.Status{3: repeated Any{1: type_url, 2: value}}; BadRequest{1: repeated FieldViolation{1: field}}
    static const std::string kBadRequest = "type.googleapis.com/google.rpc.BadRequest";
    for (const std::string& any : Fields(status.error_details(), 3)) {
        const auto url = Fields(any, 1), value = Fields(any, 2);
        if (url.size() != 1 || url[0] != kBadRequest || value.size() != 1) continue;
        const auto violations = Fields(value[0], 1);
        if (violations.empty()) continue;
        const auto field = Fields(violations[0], 1);
        if (!field.empty()) s.field = field[0];
        break;
    }
    return s;
}

}  // namespace anymole::proto
