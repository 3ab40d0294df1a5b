#include "AnyMoLe/UnrealSpace.h"

#include <cmath>

namespace anymole::ue {
namespace {

constexpr double kScale = kCentimetresPerMetre;
// The axis swap P: (P v)[i] = v[kSwap[i]]; P is its own inverse.
constexpr int kSwap[3] = {0, 2, 1};

Status Invalid(std::string field, std::string message) {
    return Status{StatusCode::InvalidArgument, std::move(message), std::move(field)};
}

void PushPosition(const Vector& p, std::vector<float>* out) {
    float xyz[3];
    PositionFromUnreal(p, xyz);
    out->insert(out->end(), xyz, xyz + 3);
}

void PushRotation(const Quat& q, std::vector<float>* out) {
    float xyzw[4];
    RotationFromUnreal(q, xyzw);
    out->insert(out->end(), xyzw, xyzw + 4);
}

}  // namespace

Vector PositionToUnreal(const float* v) {
    return {kScale * double(v[0]), kScale * double(v[2]), kScale * double(v[1])};
}

void PositionFromUnreal(const Vector& p, float* v) {
    v[0] = static_cast<float>(p.X / kScale);
    v[1] = static_cast<float>(p.Z / kScale);
    v[2] = static_cast<float>(p.Y / kScale);
}

Vector DirectionToUnreal(const float* v) { return {double(v[0]), double(v[2]), double(v[1])}; }

void DirectionFromUnreal(const Vector& d, float* v) {
    v[0] = static_cast<float>(d.X);
    v[1] = static_cast<float>(d.Z);
    v[2] = static_cast<float>(d.Y);
}

// A reflection C on positions turns a rotation's vector part into -C v (engine_api_notes.md section 1.9).
Quat RotationToUnreal(const float* q) { return {-double(q[0]), -double(q[2]), -double(q[1]), double(q[3])}; }

void RotationFromUnreal(const Quat& q, float* v) {
    v[0] = static_cast<float>(-q.X);
    v[1] = static_cast<float>(-q.Z);
    v[2] = static_cast<float>(-q.Y);
    v[3] = static_cast<float>(q.W);
}

Matrix MatrixToUnreal(const float* g) {
    // Column-vector form c[r][k] = g[k * 4 + r]; Unreal's is S c S^-1 with S = diag(100 P, 1), stored transposed.
    auto c = [g](int r, int k) { return double(g[k * 4 + r]); };
    auto p = [](int i) { return i < 3 ? kSwap[i] : 3; };
    Matrix m{};
    for (int r = 0; r < 4; ++r) {
        for (int k = 0; k < 4; ++k) {
            double v = c(p(r), p(k));
            if (r < 3 && k == 3) v *= kScale;
            if (r == 3 && k < 3) v /= kScale;
            m[k * 4 + r] = v;  // transpose: Unreal's M[k][r]
        }
    }
    return m;
}

void MatrixFromUnreal(const Matrix& m, float* g) {
    auto c = [&m](int r, int k) { return m[k * 4 + r]; };  // column-vector form of Unreal's matrix
    auto p = [](int i) { return i < 3 ? kSwap[i] : 3; };
    for (int r = 0; r < 4; ++r) {
        for (int k = 0; k < 4; ++k) {
            double v = c(p(r), p(k));
            if (r < 3 && k == 3) v /= kScale;
            if (r == 3 && k < 3) v *= kScale;
            g[k * 4 + r] = static_cast<float>(v);
        }
    }
}

SkeletonUe SkeletonToUnreal(const Skeleton& s) {
    SkeletonUe out;
    out.names = s.joint_names;
    out.parents = s.parent_indices;
    out.ref_pose.resize(s.NumJoints());
    for (size_t j = 0; j < s.NumJoints(); ++j) {
        out.ref_pose[j].Translation = PositionToUnreal(&s.rest_translations[3 * j]);
        out.ref_pose[j].Rotation = RotationToUnreal(&s.rest_rotations[4 * j]);
    }
    return out;
}

Status SkeletonFromUnreal(const SkeletonUe& s, Skeleton* out) {
    const size_t n = s.names.size();
    if (s.parents.size() != n || s.ref_pose.size() != n) {
        return Invalid("skeleton", "names, parents and ref_pose differ in length");
    }
    Skeleton k;
    for (size_t j = 0; j < n; ++j) {
        const int32_t parent = s.parents[j];
        if (parent < -1 || parent >= static_cast<int32_t>(j)) {
            return Invalid("skeleton.parent_indices[" + std::to_string(j) + "]",
                           "bone '" + s.names[j] + "' has parent " + std::to_string(parent) +
                               ": a parent must come before its children");
        }
        const Vector& sc = s.ref_pose[j].Scale3D;
        if (std::fabs(sc.X - 1) > 1e-4 || std::fabs(sc.Y - 1) > 1e-4 || std::fabs(sc.Z - 1) > 1e-4) {
            return Invalid("skeleton.rest_translations[" + std::to_string(j) + "]",
                           "bone '" + s.names[j] + "' has bind scale (" + std::to_string(sc.X) + ", " +
                               std::to_string(sc.Y) + ", " + std::to_string(sc.Z) +
                               "); the contract has no scale: apply it to the skeleton before filling");
        }
        k.joint_names.push_back(s.names[j]);
        k.parent_indices.push_back(parent);
        PushPosition(s.ref_pose[j].Translation, &k.rest_translations);
        PushRotation(s.ref_pose[j].Rotation, &k.rest_rotations);
    }
    *out = std::move(k);
    return Status{};
}

MeshUe MeshToUnreal(const SkinnedMesh& m) {
    MeshUe out;
    for (size_t i = 0; i + 2 < m.positions.size(); i += 3) out.positions.push_back(PositionToUnreal(&m.positions[i]));
    for (size_t i = 0; i + 2 < m.normals.size(); i += 3) out.normals.push_back(DirectionToUnreal(&m.normals[i]));
    out.uvs = m.uvs;
    out.triangle_indices.reserve(m.triangle_indices.size());
    for (size_t t = 0; t + 2 < m.triangle_indices.size(); t += 3) {  // the reflection reverses winding
        out.triangle_indices.push_back(m.triangle_indices[t]);
        out.triangle_indices.push_back(m.triangle_indices[t + 2]);
        out.triangle_indices.push_back(m.triangle_indices[t + 1]);
    }
    out.influences_per_vertex = m.influences_per_vertex;
    out.joint_indices = m.joint_indices;
    out.joint_weights = m.joint_weights;
    for (size_t i = 0; i + 15 < m.inverse_bind_matrices.size(); i += 16) {
        out.inverse_bind_matrices.push_back(MatrixToUnreal(&m.inverse_bind_matrices[i]));
    }
    out.base_color = m.base_color;
    out.texture = m.texture;
    out.colors = m.colors;
    out.materials = m.materials;
    out.triangle_materials = m.triangle_materials;
    out.textures = m.textures;
    return out;
}

Status MeshFromUnreal(const MeshUe& m, SkinnedMesh* out) {
    const size_t v = m.positions.size();
    if (!m.normals.empty() && m.normals.size() != v) return Invalid("mesh.normals", "one normal per vertex, or none");
    if (!m.uvs.empty() && m.uvs.size() != 2 * v) return Invalid("mesh.uvs", "two floats per vertex, or none");
    if (m.triangle_indices.size() % 3) return Invalid("mesh.triangle_indices", "not a multiple of 3");
    for (size_t i = 0; i < m.triangle_indices.size(); ++i) {
        if (m.triangle_indices[i] >= v) {
            return Invalid("mesh.triangle_indices[" + std::to_string(i) + "]",
                           "vertex " + std::to_string(m.triangle_indices[i]) + " of " + std::to_string(v));
        }
    }
    const size_t k = m.influences_per_vertex;
    if (m.joint_indices.size() != v * k || m.joint_weights.size() != v * k) {
        return Invalid("mesh.joint_weights", "expected influences_per_vertex entries per vertex");
    }
    SkinnedMesh o;
    for (const Vector& p : m.positions) PushPosition(p, &o.positions);
    for (const Vector& n : m.normals) {
        float xyz[3];
        DirectionFromUnreal(n, xyz);
        o.normals.insert(o.normals.end(), xyz, xyz + 3);
    }
    o.uvs = m.uvs;
    for (size_t t = 0; t < m.triangle_indices.size(); t += 3) {
        o.triangle_indices.push_back(m.triangle_indices[t]);
        o.triangle_indices.push_back(m.triangle_indices[t + 2]);
        o.triangle_indices.push_back(m.triangle_indices[t + 1]);
    }
    o.influences_per_vertex = m.influences_per_vertex;
    o.joint_indices = m.joint_indices;
    o.joint_weights = m.joint_weights;
    for (const Matrix& ibm : m.inverse_bind_matrices) {
        float g[16];
        MatrixFromUnreal(ibm, g);
        o.inverse_bind_matrices.insert(o.inverse_bind_matrices.end(), g, g + 16);
    }
    o.base_color = m.base_color;
    o.texture = m.texture;
    o.colors = m.colors;
    o.materials = m.materials;
    o.triangle_materials = m.triangle_materials;
    o.textures = m.textures;
    *out = std::move(o);
    return Status{};
}

MotionUe ClipToUnreal(const Clip& clip, const Skeleton& rest) {
    MotionUe out;
    const size_t j_count = rest.NumJoints();
    out.fps = clip.fps;
    out.frame_count = clip.frame_count;
    out.num_joints = j_count;
    out.keys.resize(size_t(clip.frame_count) * j_count);
    const bool all = !clip.translations.empty();
    for (uint32_t f = 0; f < clip.frame_count; ++f) {
        for (size_t j = 0; j < j_count; ++j) {
            Transform& t = out.keys[f * j_count + j];
            t.Rotation = RotationToUnreal(&clip.rotations[(f * j_count + j) * 4]);
            const float* tr = j == 0   ? &clip.root_translations[3 * f]
                              : all    ? &clip.translations[(f * j_count + j) * 3]
                                       : &rest.rest_translations[3 * j];
            t.Translation = PositionToUnreal(tr);
        }
    }
    return out;
}

Status ClipFromUnreal(const MotionUe& motion, bool with_translations, Clip* out) {
    const size_t n = motion.num_joints;
    if (motion.keys.size() != size_t(motion.frame_count) * n || n == 0) {
        return Invalid("context", "expected frame_count * num_joints keys");
    }
    Clip c;
    c.fps = static_cast<float>(motion.fps);
    c.frame_count = motion.frame_count;
    for (uint32_t f = 0; f < motion.frame_count; ++f) {
        for (size_t j = 0; j < n; ++j) {
            const Transform& t = motion.Key(f, j);
            PushRotation(t.Rotation, &c.rotations);
            if (with_translations) PushPosition(t.Translation, &c.translations);
        }
        PushPosition(motion.Key(f, 0).Translation, &c.root_translations);
    }
    *out = std::move(c);
    return Status{};
}

Status KeyframeFromUnreal(const MotionUe& motion, uint32_t frame, uint32_t timeline_frame, bool with_translations,
                          Keyframe* out) {
    if (frame >= motion.frame_count) {
        return Invalid("keyframes", "frame " + std::to_string(frame) + " is outside the sequence's " +
                                        std::to_string(motion.frame_count) + " frames");
    }
    Keyframe k;
    k.frame = timeline_frame;
    for (size_t j = 0; j < motion.num_joints; ++j) {
        PushRotation(motion.Key(frame, j).Rotation, &k.rotations);
        if (with_translations) PushPosition(motion.Key(frame, j).Translation, &k.translations);
    }
    PushPosition(motion.Key(frame, 0).Translation, &k.root_translation);
    *out = std::move(k);
    return Status{};
}

bool AnimatesTranslations(const MotionUe& motion, const SkeletonUe& skeleton, double tolerance_cm) {
    for (uint32_t f = 0; f < motion.frame_count; ++f) {
        for (size_t j = 1; j < motion.num_joints && j < skeleton.ref_pose.size(); ++j) {
            const Vector& a = motion.Key(f, j).Translation;
            const Vector& b = skeleton.ref_pose[j].Translation;
            if (std::fabs(a.X - b.X) > tolerance_cm || std::fabs(a.Y - b.Y) > tolerance_cm ||
                std::fabs(a.Z - b.Z) > tolerance_cm) {
                return true;
            }
        }
    }
    return false;
}

std::vector<Transform> BoneTrack(const MotionUe& motion, size_t joint) {
    std::vector<Transform> track;
    track.reserve(motion.frame_count);
    for (uint32_t f = 0; f < motion.frame_count; ++f) track.push_back(motion.Key(f, joint));
    return track;
}

Status MotionFromBoneTracks(double fps, const std::vector<std::vector<Transform>>& tracks, MotionUe* out) {
    MotionUe m;
    m.fps = fps;
    m.num_joints = tracks.size();
    m.frame_count = tracks.empty() ? 0 : static_cast<uint32_t>(tracks[0].size());
    for (size_t j = 0; j < tracks.size(); ++j) {
        if (tracks[j].size() != m.frame_count) {
            return Invalid("tracks[" + std::to_string(j) + "]", "has " + std::to_string(tracks[j].size()) +
                                                                    " keys, bone 0 has " +
                                                                    std::to_string(m.frame_count));
        }
    }
    m.keys.resize(size_t(m.frame_count) * m.num_joints);
    for (size_t j = 0; j < tracks.size(); ++j) {
        for (uint32_t f = 0; f < m.frame_count; ++f) m.keys[f * m.num_joints + j] = tracks[j][f];
    }
    *out = std::move(m);
    return Status{};
}

}  // namespace anymole::ue
