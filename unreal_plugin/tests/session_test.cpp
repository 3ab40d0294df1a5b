// The core's Session against the real Python server (`anymole serve` on a loopback port, started here).
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "AnyMoLe/Session.h"
#include "AnyMoLe/UnrealSpace.h"
#include "ProtoConvert.h"
#include "support.h"

namespace anymole {
namespace {

const char kFox[] = "assets/Fox.glb";
// The tiny random-weight video prior gives a `video` job that runs long enough on a CPU to cancel or interrupt.
const std::vector<std::string> kServerArgs = {"--video-prior", "tiny", "--grace", "0"};

class SessionTest : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        server_ = new testing::ServerProcess;
        ASSERT_TRUE(server_->Start(testing::TempDir("server"), kServerArgs)) << "anymole serve did not start";
    }
    static void TearDownTestSuite() {
        delete server_;
        server_ = nullptr;
    }

    static SessionOptions Options() {
        SessionOptions o;
        o.target = server_->Target();
        return o;
    }
    static std::unique_ptr<Session> Open() {
        auto s = std::make_unique<Session>(Options());
        const Status st = s->Handshake(nullptr);
        EXPECT_TRUE(st.ok()) << st.ToString();
        return s;
    }

public:
    static std::string Target() { return server_->Target(); }

protected:
    static testing::ServerProcess* server_;
};
testing::ServerProcess* SessionTest::server_ = nullptr;

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// A chain of `joints` joints with a pose whose values depend on `salt` (so its content hash is new).
CharacterAsset Chain(size_t joints, float salt) {
    CharacterAsset c;
    c.name = "chain";
    for (size_t j = 0; j < joints; ++j) {
        c.skeleton.joint_names.push_back("j" + std::to_string(j));
        c.skeleton.parent_indices.push_back(static_cast<int32_t>(j) - 1);
        c.skeleton.rest_translations.insert(c.skeleton.rest_translations.end(), {0.f, j ? 0.1f : salt, 0.f});
        c.skeleton.rest_rotations.insert(c.skeleton.rest_rotations.end(), {0.f, 0.f, 0.f, 1.f});
    }
    return c;
}

// A job on the chain: one rest-pose context frame and one key at `last` with every joint turned a little.
JobRequest ChainJob(const std::string& id, size_t joints, uint32_t last) {
    JobRequest r;
    r.character_id = id;
    r.context.fps = 30;
    r.context.frame_count = 1;
    for (size_t j = 0; j < joints; ++j) r.context.rotations.insert(r.context.rotations.end(), {0.f, 0.f, 0.f, 1.f});
    r.context.root_translations = {0.f, 1.f, 0.f};
    Keyframe k;
    k.frame = last;
    const float s = std::sin(0.2f), c = std::cos(0.2f);
    for (size_t j = 0; j < joints; ++j) k.rotations.insert(k.rotations.end(), {s, 0.f, 0.f, c});
    k.root_translation = {1.f, 1.f, 0.f};
    r.keyframes.push_back(k);
    r.method = "interp";
    r.label = "chain";
    return r;
}

// The Fox's Survey clip in Unreal space, as the editor reads it from a sequence, with what the server needs.
struct FoxScene {
    UploadResult uploaded;
    Skeleton rest;
    Clip clip;
    ue::MotionUe motion;
};

FoxScene LoadFox(Session& s) {
    FoxScene f;
    const Status st = s.Upload(testing::ReadFile(kFox), CharacterFormat::Glb, "Fox", &f.uploaded);
    EXPECT_TRUE(st.ok()) << st.ToString();
    const std::string dir = testing::ExportDir(kFox);
    f.rest = testing::ReadCharacter(dir + "/character.pb").skeleton;
    f.clip = testing::ReadClip(dir + "/Survey.clip.pb");
    f.motion = ue::ClipToUnreal(f.clip, f.rest);
    return f;
}

// The job the editor sends for context frames [a, b) and keys of the Unreal-space clip, through the conversion.
JobRequest FoxJob(const FoxScene& f, uint32_t a, uint32_t b, const std::vector<uint32_t>& keys,
                  const std::string& method) {
    const bool translations = !f.clip.translations.empty();
    ue::MotionUe ctx = f.motion;
    ctx.frame_count = b - a;
    ctx.keys.assign(f.motion.keys.begin() + a * f.motion.num_joints, f.motion.keys.begin() + b * f.motion.num_joints);
    JobRequest r;
    r.character_id = f.uploaded.character_id;
    EXPECT_TRUE(ue::ClipFromUnreal(ctx, translations, &r.context).ok());
    for (uint32_t k : keys) {
        Keyframe key;
        EXPECT_TRUE(ue::KeyframeFromUnreal(f.motion, k, k - a, translations, &key).ok());
        r.keyframes.push_back(key);
    }
    r.method = method;
    r.label = "Fox.glb:Survey";
    return r;
}

// Collects a job's events until the first one `until` accepts (then stops watching), or the end.
std::vector<JobEvent> Collect(Session& s, const std::string& job, uint64_t after,
                              const std::function<bool(const JobEvent&)>& until = {}) {
    std::vector<JobEvent> events;
    const Status st = s.Watch(job, after, [&](const JobEvent& e) {
        events.push_back(e);
        return !(until && until(e));
    });
    EXPECT_TRUE(st.ok()) << st.ToString();
    return events;
}

// What the Python client receives for the Fox's Survey clip, context 0:40, keys 60 and 82 (computed once).
const Clip& PythonFoxFill() {
    static const Clip clip = [] {
        const std::string out = testing::TempDir("python-fill") + "/result.pb";
        EXPECT_TRUE(testing::RunReference({"fill", SessionTest::Target(), kFox, "Survey", "0:40", "60,82", out}));
        return testing::ReadClip(out);
    }();
    return clip;
}

TEST_F(SessionTest, HandshakeReportsVersionAndMethods) {
    Session s(Options());
    ServerInfo info;
    const Status st = s.Handshake(&info);
    ASSERT_TRUE(st.ok()) << st.ToString();
    EXPECT_EQ(info.protocol.major, kProtocolMajor);
    EXPECT_FALSE(info.server_version.empty());
    const MethodInfo* interp = info.FindMethod("interp");
    ASSERT_NE(interp, nullptr);
    EXPECT_TRUE(interp->available);
    EXPECT_EQ(interp->output, MethodInfo::Output::Motion);
    const MethodInfo* video = info.FindMethod("video");  // the tiny prior: 2 s of context, keys on any frames, gaps up to 2 s
    ASSERT_NE(video, nullptr);
    EXPECT_EQ(video->output, MethodInfo::Output::Video);
    EXPECT_FLOAT_EQ(video->min_context_seconds, 2.f);
    EXPECT_FLOAT_EQ(video->key_spacing_seconds, 0.f);
    EXPECT_FLOAT_EQ(video->max_gap_seconds, 2.f);
    const MethodInfo* anymole = info.FindMethod("anymole");
    if (anymole && !anymole->available) EXPECT_FALSE(anymole->unavailable_reason.empty());
    EXPECT_GT(info.limits.upload_chunk_bytes, 0u);
    EXPECT_FALSE(info.auth_required);
}

TEST_F(SessionTest, OtherMajorVersionIsRefused) {
    SessionOptions o = Options();
    o.protocol = {kProtocolMajor + 1, 0};
    Session s(o);
    const Status st = s.Handshake(nullptr);
    EXPECT_EQ(st.code, StatusCode::FailedPrecondition);
    EXPECT_NE(st.message.find("update the plugin"), std::string::npos) << st.message;
}

TEST_F(SessionTest, UnreachableServerIsUnavailable) {
    SessionOptions o = Options();
    o.target = "127.0.0.1:1";
    o.handshake_timeout_s = 5;
    Session s(o);
    EXPECT_EQ(s.Handshake(nullptr).code, StatusCode::Unavailable);
}

TEST(SessionAuth, WrongTokenIsUnauthenticated) {
    testing::ServerProcess server;
    ASSERT_TRUE(server.Start(testing::TempDir("server-token"), {"--token", "s3cret"}));
    SessionOptions o;
    o.target = server.Target();
    Session anonymous(o);  // the handshake needs no token and says one is required
    ServerInfo info;
    ASSERT_TRUE(anonymous.Handshake(&info).ok());
    EXPECT_TRUE(info.auth_required);
    std::vector<JobSummary> jobs;
    EXPECT_EQ(anonymous.ListJobs(&jobs).code, StatusCode::Unauthenticated);
    o.token = "wrong";
    Session wrong(o);
    EXPECT_EQ(wrong.Handshake(nullptr).code, StatusCode::Unauthenticated);  // a token sent is checked
    const Status st = wrong.ListJobs(&jobs);
    EXPECT_EQ(st.code, StatusCode::Unauthenticated) << st.ToString();
    o.token = "s3cret";
    Session right(o);
    EXPECT_TRUE(right.Handshake(nullptr).ok());
    EXPECT_TRUE(right.ListJobs(&jobs).ok());
}

TEST_F(SessionTest, UploadIsCachedTheSecondTime) {
    auto s = Open();
    const CharacterAsset c = Chain(4, static_cast<float>(std::chrono::steady_clock::now().time_since_epoch().count() % 100000) * 1e-6f);
    UploadResult first, second;
    bool found = true;
    ASSERT_TRUE(s->GetCharacter("sha256:" + std::string(64, '0'), &found).ok());
    EXPECT_FALSE(found);
    ASSERT_TRUE(s->UploadCharacter(c, &first).ok());
    EXPECT_FALSE(first.cached);
    UploadResult held;
    ASSERT_TRUE(s->GetCharacter(first.character_id, &found, &held).ok());
    EXPECT_TRUE(found);
    EXPECT_EQ(held.skeleton.joint_names, c.skeleton.joint_names);
    EXPECT_EQ(first.skeleton.joint_names, c.skeleton.joint_names);
    ASSERT_TRUE(s->UploadCharacter(c, &second).ok());
    EXPECT_TRUE(second.cached);
    EXPECT_EQ(second.character_id, first.character_id);

    // A file larger than one chunk: the id is the hash of its bytes, and the second upload is a cache hit.
    const std::string glb = testing::ReadFile(kFox);
    UploadResult file;
    ASSERT_TRUE(s->Upload(glb, CharacterFormat::Glb, "Fox", &file).ok());
    EXPECT_EQ(file.character_id, CharacterId(glb));
    EXPECT_GT(file.vertex_count, 0u);
    ASSERT_TRUE(s->Upload(glb, CharacterFormat::Glb, "Fox", &file).ok());
    EXPECT_TRUE(file.cached);
}

// The editor's path: the character read in Unreal space, converted by the plugin and uploaded as PROTO, is the
// character the server imports from the file itself.
TEST_F(SessionTest, CharacterFromUnrealSpaceEqualsTheServersImport) {
    auto s = Open();
    const CharacterAsset canonical = testing::ReadCharacter(testing::ExportDir(kFox) + "/character.pb");
    const ue::SkeletonUe sk = ue::SkeletonToUnreal(canonical.skeleton);
    const ue::MeshUe mesh = ue::MeshToUnreal(canonical.mesh);
    CharacterAsset sent;
    sent.name = "Fox";
    ASSERT_TRUE(ue::SkeletonFromUnreal(sk, &sent.skeleton).ok());
    ASSERT_TRUE(ue::MeshFromUnreal(mesh, &sent.mesh).ok());
    sent.has_mesh = true;
    UploadResult proto, file;
    ASSERT_TRUE(s->UploadCharacter(sent, &proto).ok());
    ASSERT_TRUE(s->Upload(testing::ReadFile(kFox), CharacterFormat::Glb, "Fox", &file).ok());
    EXPECT_EQ(proto.skeleton.joint_names, file.skeleton.joint_names);
    EXPECT_EQ(proto.skeleton.parent_indices, file.skeleton.parent_indices);
    EXPECT_TRUE(SameBits(proto.skeleton.rest_translations, file.skeleton.rest_translations));
    EXPECT_TRUE(SameBits(proto.skeleton.rest_rotations, file.skeleton.rest_rotations));
    EXPECT_EQ(proto.vertex_count, file.vertex_count);
}

// A full interp fill from the Unreal-space clip: the result is bit for bit what the Python client receives for
// the same clip, context and keys (`anymole fill --server`'s own code path).
TEST_F(SessionTest, InterpFillEqualsThePythonClient) {
    auto s = Open();
    const FoxScene fox = LoadFox(*s);
    const JobRequest req = FoxJob(fox, 0, 40, {60, 82}, "interp");
    std::vector<JobEvent> events;
    const Status st = s->Inbetween(req, [&](const JobEvent& e) {
        events.push_back(e);
        return true;
    });
    ASSERT_TRUE(st.ok()) << st.ToString();
    ASSERT_FALSE(events.empty());
    ASSERT_EQ(events.back().kind, JobEvent::Kind::Completed) << events.back().message;
    for (size_t i = 0; i < events.size(); ++i) EXPECT_EQ(events[i].seq, i + 1);
    Result result;
    ASSERT_TRUE(s->DownloadResult(events.back().job_id, &result).ok());
    ASSERT_EQ(result.motion.frame_count, 83u);

    // The final motion events carry the same frames as the download.
    const size_t j = fox.rest.NumJoints();
    for (const JobEvent& e : events) {
        if (e.kind != JobEvent::Kind::Motion || !e.motion.is_final) continue;
        const std::vector<float> part(result.motion.rotations.begin() + e.motion.frame_start * j * 4,
                                      result.motion.rotations.begin() + (e.motion.frame_start + e.motion.frame_count) * j * 4);
        EXPECT_TRUE(SameBits(e.motion.rotations, part)) << "chunk at " << e.motion.frame_start;
    }

    const Clip& python = PythonFoxFill();
    EXPECT_EQ(python.frame_count, result.motion.frame_count);
    EXPECT_TRUE(SameBits(python.rotations, result.motion.rotations));
    EXPECT_TRUE(SameBits(python.root_translations, result.motion.root_translations));
    EXPECT_TRUE(SameBits(python.translations, result.motion.translations));
    // And the context frames came back exactly as the Unreal clip had them.
    EXPECT_TRUE(SameBits(std::vector<float>(result.motion.rotations.begin(), result.motion.rotations.begin() + 40 * j * 4),
                         std::vector<float>(fox.clip.rotations.begin(), fox.clip.rotations.begin() + 40 * j * 4)));
}

TEST_F(SessionTest, BadRequestNamesTheField) {
    auto s = Open();
    UploadResult up;
    ASSERT_TRUE(s->UploadCharacter(Chain(3, 0.5f), &up).ok());
    JobRequest r = ChainJob(up.character_id, 3, 10);
    r.keyframes[0].rotations.resize(8);  // two joints' worth for a three-joint skeleton
    std::string job;
    const Status st = s->Submit(r, &job);
    EXPECT_EQ(st.code, StatusCode::InvalidArgument);
    EXPECT_EQ(st.field, "keyframes[0].rotations") << st.ToString();
}

// An editor that restarted finds its job again by its client_tags and resumes the stream after the last event it
// saw; a retried submit with the same idempotency key gives the first job back.
TEST_F(SessionTest, ReattachByClientTagsResumesAfterTheLastSeenEvent) {
    auto s = Open();
    const FoxScene fox = LoadFox(*s);
    JobRequest req = FoxJob(fox, 0, 40, {60, 82}, "interp");
    req.chunk_frames = 5;
    const std::string session = std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
    req.client_tags = {{"asset", "/Game/Fox/Survey"}, {"editor_session", session}};
    std::string job, retried;
    bool existing = true;
    ASSERT_TRUE(s->Submit(req, &job, nullptr, "key-" + session, &existing).ok());
    EXPECT_FALSE(existing);
    ASSERT_TRUE(s->Submit(req, &retried, nullptr, "key-" + session, &existing).ok());
    EXPECT_TRUE(existing);
    EXPECT_EQ(retried, job);
    const auto first = Collect(*s, job, 0, [](const JobEvent&) { return true; });  // the editor closes
    ASSERT_EQ(first.size(), 1u);

    auto again = Open();  // a new session, as after a restart
    std::vector<JobSummary> jobs;
    ASSERT_TRUE(again->ListJobs(&jobs, 0, {{"editor_session", session}}).ok());
    ASSERT_EQ(jobs.size(), 1u);
    EXPECT_EQ(jobs[0].job_id, job);
    EXPECT_EQ(jobs[0].client_tags, req.client_tags);
    const auto rest = Collect(*again, job, first.back().seq);
    ASSERT_FALSE(rest.empty());
    EXPECT_EQ(rest.front().seq, first.back().seq + 1);
    EXPECT_EQ(rest.back().kind, JobEvent::Kind::Completed);
    const auto replay = Collect(*again, job, 0);
    EXPECT_EQ(replay.size(), first.size() + rest.size());
    EXPECT_EQ(replay.front().seq, 1u);
}

// A `video` job (tiny prior) runs for a while on a CPU: cancel it once it reports progress.
TEST_F(SessionTest, CancelStopsARunningJob) {
    auto s = Open();
    const FoxScene fox = LoadFox(*s);
    // Survey runs at 24 fps: the video method takes 2 s of context and a key 1 s after it.
    const JobRequest req = FoxJob(fox, 0, 49, {72}, "video");
    std::string job;
    const Status sub = s->Submit(req, &job);
    ASSERT_TRUE(sub.ok()) << sub.ToString();
    const auto started = Collect(*s, job, 0, [](const JobEvent& e) { return e.kind == JobEvent::Kind::Progress; });
    ASSERT_EQ(started.back().kind, JobEvent::Kind::Progress);
    JobState state;
    ASSERT_TRUE(s->Cancel(job, &state).ok());
    EXPECT_TRUE(state == JobState::Running || state == JobState::Cancelled);
    const auto rest = Collect(*s, job, started.back().seq);
    ASSERT_FALSE(rest.empty());
    EXPECT_EQ(rest.back().kind, JobEvent::Kind::Cancelled);
}

// StopWatching from another thread ends the stream; the job itself keeps running.
TEST_F(SessionTest, StopWatchingLeavesTheJobRunning) {
    auto s = Open();
    const FoxScene fox = LoadFox(*s);
    std::string job;
    ASSERT_TRUE(s->Submit(FoxJob(fox, 0, 49, {72}, "video"), &job).ok());
    std::thread stopper;
    std::vector<JobEvent> seen;
    const Status st = s->Watch(job, 0, [&](const JobEvent& e) {
        seen.push_back(e);
        if (e.kind == JobEvent::Kind::Progress && !stopper.joinable()) stopper = std::thread([&] { s->StopWatching(); });
        return true;
    });
    if (stopper.joinable()) stopper.join();
    EXPECT_EQ(st.code, StatusCode::Cancelled) << st.ToString();
    ASSERT_FALSE(seen.empty());
    EXPECT_FALSE(seen.back().IsTerminal());
    std::vector<JobSummary> jobs;
    ASSERT_TRUE(s->ListJobs(&jobs).ok());
    for (const auto& j : jobs) if (j.job_id == job) EXPECT_EQ(j.state, JobState::Running);
    ASSERT_TRUE(s->Cancel(job).ok());
}

// A job that waits in the queue (the one CPU worker runs a video job) while the client pings every 5 s, the
// shortest interval protocol 1.2's keepalive policy accepts: the stream is never cut off with "too many
// pings", and the waiting job's heartbeat repeats its Queued event.
TEST_F(SessionTest, KeepalivePingsSurviveAQueueWait) {
    SessionOptions o = Options();
    o.keepalive_ms = 5000;
    Session s(o);
    ASSERT_TRUE(s.Handshake(nullptr).ok());
    const FoxScene fox = LoadFox(s);
    std::string busy, waiting;
    ASSERT_TRUE(s.Submit(FoxJob(fox, 0, 49, {72}, "video"), &busy).ok());
    ASSERT_TRUE(s.Submit(FoxJob(fox, 0, 40, {60, 82}, "interp"), &waiting).ok());
    std::vector<JobEvent> events;
    std::thread canceller;
    const Status st = s.Watch(waiting, 0, [&](const JobEvent& e) {
        events.push_back(e);
        size_t queued = 0;
        for (const JobEvent& q : events) queued += q.kind == JobEvent::Kind::Queued;
        if (queued == 2 && !canceller.joinable()) {  // a heartbeat came: let the waiting job run
            canceller = std::thread([&] { Session(Options()).Cancel(busy); });
        }
        return true;
    });
    if (canceller.joinable()) canceller.join();
    ASSERT_TRUE(st.ok()) << st.ToString();
    ASSERT_GE(events.size(), 3u);
    EXPECT_EQ(events[0].kind, JobEvent::Kind::Queued);
    EXPECT_EQ(events[1].kind, JobEvent::Kind::Queued);  // the heartbeat of a job that waits
    EXPECT_EQ(events.back().kind, JobEvent::Kind::Completed);
    for (size_t i = 0; i < events.size(); ++i) EXPECT_EQ(events[i].seq, i + 1);
}

// A server stopped under a running job reports it interrupted after its restart.
TEST(SessionRestart, RunningJobIsInterrupted) {
    const std::string data = testing::TempDir("server-restart");
    testing::ServerProcess server;
    ASSERT_TRUE(server.Start(data, kServerArgs));
    SessionOptions o;
    o.target = server.Target();
    auto s = std::make_unique<Session>(o);
    ASSERT_TRUE(s->Handshake(nullptr).ok());
    const FoxScene fox = LoadFox(*s);
    std::string job;
    ASSERT_TRUE(s->Submit(FoxJob(fox, 0, 49, {72}, "video"), &job).ok());
    Collect(*s, job, 0, [](const JobEvent& e) { return e.kind == JobEvent::Kind::Progress; });
    server.Stop();
    ASSERT_TRUE(server.Start(data, kServerArgs));
    o.target = server.Target();
    s = std::make_unique<Session>(o);
    ASSERT_TRUE(s->Handshake(nullptr).ok());
    const auto events = Collect(*s, job, 0);
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back().kind, JobEvent::Kind::Interrupted);
    std::vector<JobSummary> jobs;
    ASSERT_TRUE(s->ListJobs(&jobs).ok());
    ASSERT_FALSE(jobs.empty());
    EXPECT_EQ(jobs.front().state, JobState::Interrupted);
}

// 5000 frames of 65 joints is over 4 MiB of rotations: it arrives in parts under the client's 4 MiB limit.
TEST_F(SessionTest, ResultOverFourMiBArrivesInParts) {
    auto s = Open();
    const size_t joints = 65;
    UploadResult up;
    ASSERT_TRUE(s->UploadCharacter(Chain(joints, 0.25f), &up).ok());
    JobRequest r = ChainJob(up.character_id, joints, 4999);
    r.chunk_frames = 1000;
    std::string job;
    ASSERT_TRUE(s->Submit(r, &job).ok());
    const auto events = Collect(*s, job, 0);
    ASSERT_EQ(events.back().kind, JobEvent::Kind::Completed) << events.back().message;
    Result result;
    const Status st = s->DownloadResult(job, &result);
    ASSERT_TRUE(st.ok()) << st.ToString();
    ASSERT_EQ(result.motion.frame_count, 5000u);
    ASSERT_EQ(result.motion.rotations.size(), 5000u * joints * 4);
    EXPECT_GT(result.motion.rotations.size() * sizeof(float), size_t(kDefaultReceiveLimitBytes));
    // The key frame arrived as sent.
    const float* key = &result.motion.rotations[size_t(4999) * joints * 4];
    EXPECT_FLOAT_EQ(key[0], std::sin(0.2f));
    EXPECT_FLOAT_EQ(key[3], std::cos(0.2f));
}

void FlattenJson(const google::protobuf::Value& v, std::vector<float>* out) {
    if (v.kind_case() == google::protobuf::Value::kNumberValue) out->push_back(static_cast<float>(v.number_value()));
    for (const auto& item : v.list_value().values()) FlattenJson(item, out);
}

std::vector<float> JsonArray(const google::protobuf::Struct& doc, const char* key) {
    std::vector<float> out;
    if (doc.fields().count(key)) FlattenJson(doc.fields().at(key), &out);
    return out;
}

google::protobuf::Struct ReadJson(const std::string& path) {
    google::protobuf::Struct doc;
    EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(testing::ReadFile(path), &doc).ok()) << path;
    return doc;
}

// The command-line example (upload the file, clip through Unreal space, fill, JSON out) on the clip `anymole
// convert --out clip.json` wrote gives what `anymole fill --server ... --out result.json` writes for the same
// file, clip, context and keys.
TEST_F(SessionTest, CommandLineExampleEqualsAnymoleFill) {
    const std::string dir = testing::TempDir("ue-fill");
    ASSERT_TRUE(testing::RunPython({"-m", "anymole.cli", "convert", kFox, "--clip", "Survey", "--out", dir + "/clip.json"}));
    const std::string cmd = std::string(ANYMOLE_UE_FILL) + " --server " + Target() + " " + kFox + " --motion " + dir +
                            "/clip.json --context 0:40 --keys 60,82 --method interp --out " + dir + "/ue.json";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    ASSERT_TRUE(testing::RunPython({"-m", "anymole.cli", "fill", kFox, "--clip", "Survey", "--context", "0:40", "--keys",
                                    "60,82", "--server", Target(), "--out", dir + "/python.json"}));
    const auto ue = ReadJson(dir + "/ue.json"), python = ReadJson(dir + "/python.json");
    EXPECT_EQ(ue.fields().at("format").string_value(), python.fields().at("format").string_value());
    EXPECT_EQ(ue.fields().at("fps").number_value(), python.fields().at("fps").number_value());
    EXPECT_EQ(ue.fields().at("joint_names").DebugString(), python.fields().at("joint_names").DebugString());
    for (const char* key : {"rotations", "root_translations", "translations"}) {
        const auto a = JsonArray(ue, key), b = JsonArray(python, key);
        EXPECT_TRUE(SameBits(a, b)) << key << ": " << a.size() << " vs " << b.size() << " values";  // zero signs too
    }
    EXPECT_EQ(JsonArray(ue, "rotations").size(), 83u * ue.fields().at("joint_names").list_value().values_size() * 4);

    // A wrong range is one clear message and exit status 1.
    const std::string bad = std::string(ANYMOLE_UE_FILL) + " --server " + Target() + " " + kFox + " --motion " + dir +
                            "/clip.json --context 0:40 --keys 10 --out " + dir + "/bad.json 2>/dev/null";
    const int rc = std::system(bad.c_str());
    EXPECT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 1);
}

// Event kinds a newer server adds decode as Unknown (Watch skips them) instead of failing.
TEST(ProtoConvert, UnknownEventKindDecodesAsUnknown) {
    ::anymole::v1::JobEvent known;
    known.set_job_id("j");
    known.set_seq(7);
    std::string bytes = known.SerializeAsString();
    bytes += std::string("\xa2\x06\x02\x08\x01", 5);  // field 100, length 2: a message the client does not know
    ::anymole::v1::JobEvent parsed;
    ASSERT_TRUE(parsed.ParseFromString(bytes));
    const JobEvent e = proto::FromProto(parsed);
    EXPECT_EQ(e.kind, JobEvent::Kind::Unknown);
    EXPECT_EQ(e.seq, 7u);
}

}  // namespace
}  // namespace anymole
