// Unreal <-> canonical conversion: known vectors, property tests on random values (fixed seeds), and round trips
// on every bundled character as the server imports it.
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>

#include "AnyMoLe/UnrealSpace.h"
#include "support.h"

namespace anymole {
namespace {

using ue::Matrix;
using ue::Quat;
using ue::Vector;

bool SameBits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

template <typename T>
void ExpectSameBits(const std::vector<T>& a, const std::vector<T>& b, const char* what) {
    ASSERT_EQ(a.size(), b.size()) << what;
    for (size_t i = 0; i < a.size(); ++i) {
        ASSERT_TRUE(std::memcmp(&a[i], &b[i], sizeof(T)) == 0) << what << "[" << i << "]: " << a[i] << " vs " << b[i];
    }
}

// q v q*, the same formula in either space (FQuat::RotateVector in Unreal).
template <typename V, typename Q>
V Rotate(const Q& q, const V& v) {
    const double tx = 2 * (q[1] * v[2] - q[2] * v[1]), ty = 2 * (q[2] * v[0] - q[0] * v[2]),
                 tz = 2 * (q[0] * v[1] - q[1] * v[0]);
    return {v[0] + q[3] * tx + (q[1] * tz - q[2] * ty), v[1] + q[3] * ty + (q[2] * tx - q[0] * tz),
            v[2] + q[3] * tz + (q[0] * ty - q[1] * tx)};
}
using D3 = std::array<double, 3>;
using D4 = std::array<double, 4>;
D3 Arr(const Vector& v) { return {v.X, v.Y, v.Z}; }
D4 Arr(const Quat& q) { return {q.X, q.Y, q.Z, q.W}; }

struct Random {
    std::mt19937 gen{1234};
    float Uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(gen); }
    std::array<float, 4> UnitQuat() {
        std::normal_distribution<float> n;
        std::array<float, 4> q{n(gen), n(gen), n(gen), n(gen)};
        const float len = std::sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
        for (float& c : q) c /= len;
        return q;
    }
};

TEST(UnrealSpace, KnownAxesFollowEpicsGltfImporter) {
    const float up[3] = {0, 1, 0}, forward[3] = {0, 0, 1}, right[3] = {1, 0, 0};
    const Vector u = ue::PositionToUnreal(up), f = ue::PositionToUnreal(forward), r = ue::PositionToUnreal(right);
    EXPECT_EQ(Arr(u), (D3{0, 0, 100}));  // glTF +Y up -> Unreal +Z up, metres -> cm
    EXPECT_EQ(Arr(f), (D3{0, 100, 0}));  // glTF +Z front -> Unreal +Y
    EXPECT_EQ(Arr(r), (D3{100, 0, 0}));
    // 90 degrees about glTF's up axis turns +X into -Z; in Unreal the same turn takes +X to -Y.
    const float s = std::sqrt(0.5f);
    const float yaw[4] = {0, s, 0, s};
    const Quat q = ue::RotationToUnreal(yaw);
    EXPECT_EQ(Arr(q), (D4{-0.0, -0.0, -double(s), double(s)}));
    const D3 turned = Rotate(Arr(q), D3{100, 0, 0});
    EXPECT_NEAR(turned[0], 0, 1e-5);
    EXPECT_NEAR(turned[1], -100, 1e-5);
    EXPECT_NEAR(turned[2], 0, 1e-5);
}

TEST(UnrealSpace, CanonicalRoundTripIsBitExact) {
    Random rnd;
    for (int i = 0; i < 20000; ++i) {
        const float p[3] = {rnd.Uniform(-50, 50), rnd.Uniform(-1e-3f, 1e-3f), rnd.Uniform(-1e4f, 1e4f)};
        float back[3];
        ue::PositionFromUnreal(ue::PositionToUnreal(p), back);
        for (int k = 0; k < 3; ++k) ASSERT_TRUE(SameBits(p[k], back[k])) << p[k] << " came back as " << back[k];
        const auto q = rnd.UnitQuat();
        float qb[4];
        ue::RotationFromUnreal(ue::RotationToUnreal(q.data()), qb);
        for (int k = 0; k < 4; ++k) ASSERT_TRUE(SameBits(q[k], qb[k]));
        float n[3];
        ue::DirectionFromUnreal(ue::DirectionToUnreal(p), n);
        for (int k = 0; k < 3; ++k) ASSERT_TRUE(SameBits(p[k], n[k]));
    }
}

TEST(UnrealSpace, UnrealRoundTripKeepsFloatPrecision) {
    std::mt19937 gen(7);
    std::uniform_real_distribution<double> cm(-1e4, 1e4);
    for (int i = 0; i < 10000; ++i) {
        const Vector p{cm(gen), cm(gen), cm(gen)};
        float c[3];
        ue::PositionFromUnreal(p, c);
        const Vector back = ue::PositionToUnreal(c);
        EXPECT_NEAR(back.X, p.X, 1e-7 * std::fabs(p.X) + 1e-9);
        EXPECT_NEAR(back.Y, p.Y, 1e-7 * std::fabs(p.Y) + 1e-9);
        EXPECT_NEAR(back.Z, p.Z, 1e-7 * std::fabs(p.Z) + 1e-9);
    }
}

// The rotation map agrees with the position map: rotating a mapped point equals mapping the rotated point.
TEST(UnrealSpace, RotationMapCommutesWithPositionMap) {
    Random rnd;
    for (int i = 0; i < 5000; ++i) {
        const auto q = rnd.UnitQuat();
        const float v[3] = {rnd.Uniform(-2, 2), rnd.Uniform(-2, 2), rnd.Uniform(-2, 2)};
        const D3 rotated = Rotate(D4{q[0], q[1], q[2], q[3]}, D3{v[0], v[1], v[2]});
        const float rf[3] = {float(rotated[0]), float(rotated[1]), float(rotated[2])};
        const D3 expected = Arr(ue::PositionToUnreal(rf));
        const D3 got = Rotate(Arr(ue::RotationToUnreal(q.data())), Arr(ue::PositionToUnreal(v)));
        for (int k = 0; k < 3; ++k) ASSERT_NEAR(got[k], expected[k], 1e-3);
    }
}

// An inverse bind matrix maps Unreal points as the canonical one maps canonical points (p' = p * M in Unreal).
TEST(UnrealSpace, MatrixMapCommutesWithPositionMap) {
    Random rnd;
    for (int i = 0; i < 2000; ++i) {
        const auto q = rnd.UnitQuat();
        const float s = rnd.Uniform(0.5f, 2.f);
        // Column-major rotation * scale with a translation, as glTF stores inverse bind matrices.
        const double x = q[0], y = q[1], z = q[2], w = q[3];
        const double r[3][3] = {{1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)},
                                {2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)},
                                {2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)}};
        float g[16] = {0};
        for (int row = 0; row < 3; ++row)
            for (int col = 0; col < 3; ++col) g[col * 4 + row] = float(s * r[row][col]);
        for (int row = 0; row < 3; ++row) g[12 + row] = rnd.Uniform(-1, 1);
        g[15] = 1;
        const float p[3] = {rnd.Uniform(-1, 1), rnd.Uniform(-1, 1), rnd.Uniform(-1, 1)};
        float mapped[3];
        for (int row = 0; row < 3; ++row) {
            mapped[row] = float(g[row] * p[0] + g[4 + row] * p[1] + g[8 + row] * p[2] + g[12 + row]);
        }
        const Matrix m = ue::MatrixToUnreal(g);
        const D3 pu = Arr(ue::PositionToUnreal(p));
        const D3 expected = Arr(ue::PositionToUnreal(mapped));
        for (int col = 0; col < 3; ++col) {
            const double got = pu[0] * m[0 * 4 + col] + pu[1] * m[1 * 4 + col] + pu[2] * m[2 * 4 + col] + m[12 + col];
            ASSERT_NEAR(got, expected[col], 1e-3);
        }
        float back[16];
        ue::MatrixFromUnreal(m, back);
        for (int k = 0; k < 16; ++k) ASSERT_TRUE(SameBits(g[k], back[k])) << k;
    }
}

TEST(UnrealSpace, SkeletonFromUnrealNamesTheBadBone) {
    ue::SkeletonUe s;
    s.names = {"root", "hip", "knee"};
    s.parents = {-1, 0, 1};
    s.ref_pose.resize(3);
    s.ref_pose[2].Scale3D = {1, 2, 1};
    Skeleton out;
    Status st = ue::SkeletonFromUnreal(s, &out);
    EXPECT_EQ(st.code, StatusCode::InvalidArgument);
    EXPECT_EQ(st.field, "skeleton.rest_translations[2]");
    EXPECT_NE(st.message.find("'knee'"), std::string::npos) << st.message;
    s.ref_pose[2].Scale3D = {1, 1, 1};
    s.parents = {-1, 2, 1};
    st = ue::SkeletonFromUnreal(s, &out);
    EXPECT_EQ(st.field, "skeleton.parent_indices[1]");
    s.parents = {-1, 0, 1};
    EXPECT_TRUE(ue::SkeletonFromUnreal(s, &out).ok());
    EXPECT_EQ(out.joint_names, s.names);
}

TEST(UnrealSpace, BoneTracksPackAndUnpack) {
    Random rnd;
    ue::MotionUe m;
    m.fps = 24;
    m.frame_count = 7;
    m.num_joints = 5;
    for (int i = 0; i < 35; ++i) {
        const auto q = rnd.UnitQuat();
        ue::Transform t;
        t.Rotation = {q[0], q[1], q[2], q[3]};
        t.Translation = {rnd.Uniform(-9, 9), double(i), 0};
        m.keys.push_back(t);
    }
    std::vector<std::vector<ue::Transform>> tracks;
    for (size_t j = 0; j < m.num_joints; ++j) tracks.push_back(ue::BoneTrack(m, j));
    EXPECT_EQ(tracks[3][2].Translation.Y, 2 * 5 + 3);  // frame 2, joint 3
    ue::MotionUe back;
    ASSERT_TRUE(ue::MotionFromBoneTracks(24, tracks, &back).ok());
    ASSERT_EQ(back.keys.size(), m.keys.size());
    for (size_t i = 0; i < m.keys.size(); ++i) EXPECT_EQ(Arr(back.keys[i].Rotation), Arr(m.keys[i].Rotation));
    tracks[4].pop_back();
    EXPECT_EQ(ue::MotionFromBoneTracks(24, tracks, &back).field, "tracks[4]");
}

// The shared conversion vectors (tests/data/conversions/vectors.json, also reproduced by the Unity package):
// canonical -> Unreal gives the file's Unreal values (float64), and Unreal -> canonical the canonical ones.
class ConversionVectors : public ::testing::Test {
protected:
    void SetUp() override {
        ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(
                        testing::ReadFile("tests/data/conversions/vectors.json"), &doc_).ok());
    }
    // The rows of a nested array (J x 3, F x J x 4, J x 4 x 4 ...) flattened, as doubles.
    std::vector<double> Flat(const char* space, const char* field) const {
        std::vector<double> out;
        Collect(doc_.fields().at(space).struct_value().fields().at(field), &out);
        return out;
    }
    static void Collect(const google::protobuf::Value& v, std::vector<double>* out) {
        if (v.kind_case() == google::protobuf::Value::kNumberValue) out->push_back(v.number_value());
        for (const auto& item : v.list_value().values()) Collect(item, out);
    }
    google::protobuf::Struct doc_;
};

TEST_F(ConversionVectors, PositionsAndRotationsMatchBothWays) {
    for (const char* field : {"rest_translations", "root_translations", "points"}) {
        const auto c = Flat("canonical", field), u = Flat("unreal", field);
        ASSERT_EQ(c.size(), u.size()) << field;
        for (size_t i = 0; i < c.size(); i += 3) {
            const float p[3] = {float(c[i]), float(c[i + 1]), float(c[i + 2])};
            const D3 got = Arr(ue::PositionToUnreal(p));
            for (int k = 0; k < 3; ++k) EXPECT_DOUBLE_EQ(got[k], u[i + k]) << field << "[" << i / 3 << "]";
            float back[3];
            ue::PositionFromUnreal({u[i], u[i + 1], u[i + 2]}, back);
            for (int k = 0; k < 3; ++k) EXPECT_TRUE(SameBits(back[k], p[k])) << field << "[" << i / 3 << "]";
        }
    }
    for (const char* field : {"rest_rotations", "rotations"}) {
        const auto c = Flat("canonical", field), u = Flat("unreal", field);
        ASSERT_EQ(c.size(), u.size()) << field;
        for (size_t i = 0; i < c.size(); i += 4) {
            const float q[4] = {float(c[i]), float(c[i + 1]), float(c[i + 2]), float(c[i + 3])};
            const D4 got = Arr(ue::RotationToUnreal(q));
            for (int k = 0; k < 4; ++k) EXPECT_EQ(got[k], u[i + k]) << field << "[" << i / 4 << "]";
            float back[4];
            ue::RotationFromUnreal({u[i], u[i + 1], u[i + 2], u[i + 3]}, back);
            for (int k = 0; k < 4; ++k) EXPECT_EQ(back[k], q[k]) << field << "[" << i / 4 << "]";
        }
    }
}

TEST_F(ConversionVectors, InverseBindMatricesMatchBothWays) {
    // The file stores A[row][column] of the map acting on column vectors, in each space.
    const auto c = Flat("canonical", "inverse_bind_matrices"), u = Flat("unreal", "inverse_bind_matrices");
    ASSERT_EQ(c.size(), u.size());
    ASSERT_FALSE(c.empty());
    for (size_t m = 0; m < c.size(); m += 16) {
        float gltf[16];  // the wire's column-major array
        for (int r = 0; r < 4; ++r)
            for (int k = 0; k < 4; ++k) gltf[k * 4 + r] = float(c[m + r * 4 + k]);
        const Matrix fm = ue::MatrixToUnreal(gltf);  // FMatrix: the transpose of the column-vector form
        for (int r = 0; r < 4; ++r)
            for (int k = 0; k < 4; ++k) EXPECT_NEAR(fm[k * 4 + r], u[m + r * 4 + k], 1e-9 * (1 + std::fabs(u[m + r * 4 + k])));
        Matrix from_file;
        for (int r = 0; r < 4; ++r)
            for (int k = 0; k < 4; ++k) from_file[k * 4 + r] = u[m + r * 4 + k];
        float back[16];
        ue::MatrixFromUnreal(from_file, back);
        for (int i = 0; i < 16; ++i) EXPECT_TRUE(SameBits(back[i], gltf[i])) << "matrix " << m / 16 << " element " << i;
    }
}

// Every bundled character, as the server imports it: canonical -> Unreal -> canonical is exact, joints keep their
// world positions under the map, and faces keep facing along their normals.
class BundledCharacter : public ::testing::TestWithParam<std::string> {};

D3 Cross(const D3& a, const D3& b) {
    return {a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]};
}

TEST_P(BundledCharacter, RoundTripsThroughUnrealSpace) {
    const std::string asset = GetParam();
    const std::string dir = testing::ExportDir(asset);
    const CharacterAsset c = testing::ReadCharacter(dir + "/character.pb");
    ASSERT_GT(c.skeleton.NumJoints(), 0u) << "python_reference.py export failed for " << asset;

    const ue::SkeletonUe sk = ue::SkeletonToUnreal(c.skeleton);
    Skeleton back;
    ASSERT_TRUE(ue::SkeletonFromUnreal(sk, &back).ok());
    EXPECT_EQ(back.joint_names, c.skeleton.joint_names);
    EXPECT_EQ(back.parent_indices, c.skeleton.parent_indices);
    ExpectSameBits(back.rest_translations, c.skeleton.rest_translations, "rest_translations");
    ExpectSameBits(back.rest_rotations, c.skeleton.rest_rotations, "rest_rotations");

    // Forward kinematics in both spaces: Unreal world positions are the mapped canonical ones.
    const size_t n = c.skeleton.NumJoints();
    std::vector<D4> gq(n), uq(n);
    std::vector<D3> gp(n), up(n);
    for (size_t j = 0; j < n; ++j) {
        const float* lt = &c.skeleton.rest_translations[3 * j];
        const float* lr = &c.skeleton.rest_rotations[4 * j];
        const D4 q{lr[0], lr[1], lr[2], lr[3]};
        const D3 t{lt[0], lt[1], lt[2]};
        const D4 qu = Arr(sk.ref_pose[j].Rotation);
        const D3 tu = Arr(sk.ref_pose[j].Translation);
        const int p = c.skeleton.parent_indices[j];
        auto mul = [](const D4& a, const D4& b) {
            return D4{a[3] * b[0] + a[0] * b[3] + a[1] * b[2] - a[2] * b[1],
                      a[3] * b[1] - a[0] * b[2] + a[1] * b[3] + a[2] * b[0],
                      a[3] * b[2] + a[0] * b[1] - a[1] * b[0] + a[2] * b[3],
                      a[3] * b[3] - a[0] * b[0] - a[1] * b[1] - a[2] * b[2]};
        };
        auto add = [](const D3& a, const D3& b) { return D3{a[0] + b[0], a[1] + b[1], a[2] + b[2]}; };
        gq[j] = p < 0 ? q : mul(gq[p], q);
        gp[j] = p < 0 ? t : add(gp[p], Rotate(gq[p], t));
        uq[j] = p < 0 ? qu : mul(uq[p], qu);
        up[j] = p < 0 ? tu : add(up[p], Rotate(uq[p], tu));
        const float g[3] = {float(gp[j][0]), float(gp[j][1]), float(gp[j][2])};
        const D3 expected = Arr(ue::PositionToUnreal(g));
        for (int k = 0; k < 3; ++k) ASSERT_NEAR(up[j][k], expected[k], 1e-3 + 1e-5 * std::fabs(expected[k])) << j;
    }

    if (c.has_mesh) {
        const ue::MeshUe mu = ue::MeshToUnreal(c.mesh);
        SkinnedMesh mb;
        ASSERT_TRUE(ue::MeshFromUnreal(mu, &mb).ok());
        ExpectSameBits(mb.positions, c.mesh.positions, "positions");
        ExpectSameBits(mb.normals, c.mesh.normals, "normals");
        ExpectSameBits(mb.inverse_bind_matrices, c.mesh.inverse_bind_matrices, "inverse_bind_matrices");
        EXPECT_EQ(mb.triangle_indices, c.mesh.triangle_indices);
        EXPECT_EQ(mb.joint_indices, c.mesh.joint_indices);
        EXPECT_EQ(mb.triangle_materials, c.mesh.triangle_materials);
        EXPECT_EQ(mb.materials.size(), c.mesh.materials.size());
        ExpectSameBits(mb.colors, c.mesh.colors, "colors");
        // Winding: where a canonical triangle's (b-a)x(c-a) agrees with its vertex normal, the Unreal triangle's
        // does with the mapped normal.
        size_t agree = 0, agree_ue = 0;
        for (size_t t = 0; !mu.normals.empty() && t < c.mesh.triangle_indices.size(); t += 3) {
            auto at = [&](uint32_t v) { return D3{c.mesh.positions[3 * v], c.mesh.positions[3 * v + 1], c.mesh.positions[3 * v + 2]}; };
            const uint32_t a = c.mesh.triangle_indices[t], b = c.mesh.triangle_indices[t + 1], d = c.mesh.triangle_indices[t + 2];
            const D3 pa = at(a), pb = at(b), pd = at(d);
            const D3 nrm = Cross({pb[0] - pa[0], pb[1] - pa[1], pb[2] - pa[2]}, {pd[0] - pa[0], pd[1] - pa[1], pd[2] - pa[2]});
            const float* vn = &c.mesh.normals[3 * a];
            agree += nrm[0] * vn[0] + nrm[1] * vn[1] + nrm[2] * vn[2] > 0;
            const uint32_t ua = mu.triangle_indices[t], ub = mu.triangle_indices[t + 1], ud = mu.triangle_indices[t + 2];
            const D3 qa = Arr(mu.positions[ua]), qb = Arr(mu.positions[ub]), qd = Arr(mu.positions[ud]);
            const D3 un = Cross({qb[0] - qa[0], qb[1] - qa[1], qb[2] - qa[2]}, {qd[0] - qa[0], qd[1] - qa[1], qd[2] - qa[2]});
            const D3 mn = Arr(mu.normals[ua]);
            agree_ue += un[0] * mn[0] + un[1] * mn[1] + un[2] * mn[2] > 0;
        }
        EXPECT_EQ(agree_ue, agree);
    }

    // Every clip: canonical -> Unreal keys -> canonical is exact.
    for (const auto& entry : std::filesystem::directory_iterator(dir)) {
        const std::string path = entry.path().string();
        if (path.size() < 8 || path.substr(path.size() - 8) != ".clip.pb") continue;
        const Clip clip = testing::ReadClip(path);
        const ue::MotionUe m = ue::ClipToUnreal(clip, c.skeleton);
        Clip cb;
        ASSERT_TRUE(ue::ClipFromUnreal(m, !clip.translations.empty(), &cb).ok());
        EXPECT_EQ(cb.frame_count, clip.frame_count);
        EXPECT_TRUE(SameBits(cb.fps, clip.fps));
        ExpectSameBits(cb.rotations, clip.rotations, "rotations");
        ExpectSameBits(cb.root_translations, clip.root_translations, "root_translations");
        if (!clip.translations.empty()) {
            // Joint 0's column is the root translation on the wire; the rest must come back exactly.
            for (uint32_t f = 0; f < clip.frame_count; ++f)
                for (size_t j = 1; j < n; ++j)
                    for (int k = 0; k < 3; ++k)
                        ASSERT_TRUE(SameBits(cb.translations[(f * n + j) * 3 + k], clip.translations[(f * n + j) * 3 + k]));
        }
    }
}

INSTANTIATE_TEST_SUITE_P(Assets, BundledCharacter, ::testing::ValuesIn(testing::BundledAssets()),
                         [](const auto& info) {
                             std::string name = std::filesystem::path(info.param).filename().string();
                             for (char& ch : name) if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                             return name;
                         });

}  // namespace
}  // namespace anymole
