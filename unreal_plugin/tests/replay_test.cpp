// The core's Session against the recorded streams of tests/data/streams (what the real server sent the Python
// client, protocol 1.2): a local gRPC server answers each call with the recorded messages and final status, and
// the tests check what the Session makes of them and what it sent.
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>

#include "AnyMoLe/Session.h"
#include "ProtoConvert.h"
#include "support.h"

namespace anymole {
namespace {

namespace pb = ::anymole::v1;
const std::string kStreams = "tests/data/streams/";

// The messages of a length-prefixed file: 1 flag byte, 4 bytes big-endian length, the message.
std::vector<std::string> Messages(const std::string& path) {
    const std::string data = testing::ReadFile(path);
    std::vector<std::string> out;
    for (size_t at = 0; at + 5 <= data.size();) {
        const auto* p = reinterpret_cast<const unsigned char*>(data.data() + at + 1);
        const size_t len = (size_t(p[0]) << 24) | (size_t(p[1]) << 16) | (size_t(p[2]) << 8) | p[3];
        out.push_back(data.substr(at + 5, len));
        at += 5 + len;
    }
    return out;
}

std::string Base64Decode(const std::string& in) {
    static const std::string kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    uint32_t acc = 0;
    int bits = 0;
    for (char c : in) {
        const size_t v = kAlphabet.find(c);
        if (v == std::string::npos) continue;  // '=' padding
        acc = (acc << 6) | static_cast<uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out += static_cast<char>((acc >> bits) & 0xff);
        }
    }
    return out;
}

// One recorded call: its method, the server's messages and final status; `received` collects what the client sent.
struct Call {
    std::string method;
    std::vector<std::string> responses;
    grpc::Status status;
    std::string version;  // the anymole-protocol-version metadata the recording's client sent
    std::vector<std::string> received;
};

std::deque<Call> Scenario(const std::string& name) {
    google::protobuf::Struct index;
    EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(testing::ReadFile(kStreams + "index.json"), &index).ok());
    std::deque<Call> calls;
    for (const auto& s : index.fields().at("scenarios").list_value().values()) {
        const auto& f = s.struct_value().fields();
        if (f.at("name").string_value() != name) continue;
        for (const auto& c : f.at("calls").list_value().values()) {
            const auto& cf = c.struct_value().fields();
            const auto& st = cf.at("status").struct_value().fields();
            Call call;
            call.method = cf.at("method").string_value();
            call.responses = Messages(kStreams + cf.at("responses").string_value());
            const std::string details = st.count("status_details_bin") ? Base64Decode(st.at("status_details_bin").string_value()) : "";
            call.status = grpc::Status(static_cast<grpc::StatusCode>(st.at("code_number").number_value()),
                                       st.at("message").string_value(), details);
            call.version = cf.at("metadata").struct_value().fields().at("anymole-protocol-version").string_value();
            calls.push_back(std::move(call));
        }
    }
    EXPECT_FALSE(calls.empty()) << "no scenario " << name;
    return calls;
}

// Answers each incoming call with the next recorded call of the scenario (refusing calls out of order).
class ReplayServer : public grpc::CallbackGenericService {
public:
    explicit ReplayServer(std::deque<Call> calls) : pending_(std::move(calls)) {
        grpc::ServerBuilder builder;
        builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
        builder.RegisterCallbackGenericService(this);
        builder.SetMaxReceiveMessageSize(-1);
        builder.SetMaxSendMessageSize(-1);
        server_ = builder.BuildAndStart();
    }
    ~ReplayServer() override { server_->Shutdown(); }

    std::string Target() const { return "127.0.0.1:" + std::to_string(port_); }
    // The first message the client sent in its call of `method` (e.g. "CancelJob"), once `n` calls finished (a
    // reactor finishes just after the client has its answer).
    std::string Sent(const std::string& method, size_t n) {
        std::unique_lock<std::mutex> lock(mutex_);
        finished_.wait_for(lock, std::chrono::seconds(10), [&] { return done_.size() >= n; });
        for (const Call& c : done_) {
            if (c.method == "/anymole.v1.AnyMoLeService/" + method && !c.received.empty()) return c.received[0];
        }
        return {};
    }

private:
    class Reactor : public grpc::ServerGenericBidiReactor {
    public:
        Reactor(ReplayServer* owner, grpc::GenericCallbackServerContext* ctx) : owner_(owner) {
            {
                std::lock_guard<std::mutex> lock(owner_->mutex_);
                if (!owner_->pending_.empty() && owner_->pending_.front().method == ctx->method()) {
                    call_ = std::move(owner_->pending_.front());
                    owner_->pending_.pop_front();
                    ok_ = true;
                }
            }
            if (!ok_) {
                Finish(grpc::Status(grpc::StatusCode::INTERNAL, "unexpected call " + ctx->method()));
                return;
            }
            const auto md = ctx->client_metadata().find("anymole-protocol-version");
            if (md == ctx->client_metadata().end() || std::string(md->second.data(), md->second.size()) != call_.version) {
                ok_ = false;
                Finish(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "the client did not send version " + call_.version));
                return;
            }
            StartRead(&in_);
        }
        void OnReadDone(bool ok) override {
            if (ok) {
                std::vector<grpc::Slice> slices;
                in_.Dump(&slices);
                std::string msg;
                for (const auto& s : slices) msg.append(reinterpret_cast<const char*>(s.begin()), s.size());
                call_.received.push_back(std::move(msg));
                StartRead(&in_);
                return;
            }
            Next();  // the client finished sending: answer
        }
        void OnWriteDone(bool ok) override {
            if (!ok) {
                Finish(grpc::Status::CANCELLED);
                return;
            }
            Next();
        }
        void OnDone() override {
            if (ok_) {
                std::lock_guard<std::mutex> lock(owner_->mutex_);
                owner_->done_.push_back(std::move(call_));
                owner_->finished_.notify_all();
            }
            delete this;
        }

    private:
        void Next() {
            if (next_ < call_.responses.size()) {
                grpc::Slice slice(call_.responses[next_++]);
                out_ = grpc::ByteBuffer(&slice, 1);
                StartWrite(&out_);
            } else {
                Finish(call_.status);
            }
        }
        ReplayServer* owner_;
        Call call_;
        bool ok_ = false;
        size_t next_ = 0;
        grpc::ByteBuffer in_, out_;
    };

    grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* ctx) override {
        return new Reactor(this, ctx);
    }

    std::mutex mutex_;
    std::condition_variable finished_;
    std::deque<Call> pending_;
    std::vector<Call> done_;
    int port_ = 0;
    std::unique_ptr<grpc::Server> server_;
};

SessionOptions Options(const ReplayServer& server) {
    SessionOptions o;
    o.target = server.Target();
    return o;
}

// The payload a recorded upload carried: its chunks put together.
std::string RecordedPayload(const std::string& file) {
    std::string payload;
    for (const std::string& m : Messages(kStreams + file)) {
        pb::UploadCharacterRequest req;
        req.ParseFromString(m);
        if (req.has_chunk()) payload += req.chunk();
    }
    return payload;
}

std::vector<JobEvent> Events(const std::function<Status(const EventHandler&)>& call, Status* status) {
    std::vector<JobEvent> events;
    *status = call([&](const JobEvent& e) {
        events.push_back(e);
        return true;
    });
    return events;
}

TEST(Replay, Handshake) {
    ReplayServer server(Scenario("handshake"));
    Session s(Options(server));
    ServerInfo info;
    const Status st = s.Handshake(&info);
    ASSERT_TRUE(st.ok()) << st.ToString();
    EXPECT_EQ(info.protocol.major, 1u);
    EXPECT_EQ(info.protocol.minor, 2u);
    ASSERT_NE(info.FindMethod("interp"), nullptr);
    EXPECT_TRUE(info.FindMethod("interp")->available);
    EXPECT_GT(info.limits.upload_chunk_bytes, 0u);
    pb::GetServerInfoRequest sent;
    ASSERT_TRUE(sent.ParseFromString(server.Sent("GetServerInfo", 1)));
    EXPECT_EQ(sent.client_protocol().major(), kProtocolMajor);
    EXPECT_EQ(sent.client_protocol().minor(), kProtocolMinor);
}

TEST(Replay, UploadNewThenCached) {
    const std::string payload = RecordedPayload("upload_new/01-UploadCharacter.req");
    ASSERT_FALSE(payload.empty());
    for (const char* name : {"upload_new", "upload_cached"}) {
        ReplayServer server(Scenario(name));
        Session s(Options(server));
        UploadResult up;
        const Status st = s.Upload(payload, CharacterFormat::Proto, "", &up);
        ASSERT_TRUE(st.ok()) << st.ToString();
        EXPECT_EQ(up.cached, std::string(name) == "upload_cached");
        EXPECT_EQ(up.character_id, CharacterId(payload));  // our SHA-256 is the server's id
        EXPECT_FALSE(up.skeleton.joint_names.empty());
        pb::UploadCharacterRequest header;
        ASSERT_TRUE(header.ParseFromString(server.Sent("UploadCharacter", 1)));
        EXPECT_EQ(header.header().sha256(), CharacterId(payload).substr(7));
        EXPECT_EQ(header.header().total_bytes(), payload.size());
    }
}

TEST(Replay, InterpFillAndDownload) {
    ReplayServer server(Scenario("interp_fill"));
    Session s(Options(server));
    Status st;
    const auto events = Events([&](const EventHandler& h) { return s.Inbetween(JobRequest{}, h); }, &st);
    ASSERT_TRUE(st.ok()) << st.ToString();
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back().kind, JobEvent::Kind::Completed);
    uint32_t streamed = 0;
    for (size_t i = 0; i < events.size(); ++i) {
        EXPECT_EQ(events[i].seq, i + 1);
        if (events[i].kind == JobEvent::Kind::Motion && events[i].motion.is_final) streamed += events[i].motion.frame_count;
    }
    Result result;
    st = s.DownloadResult(events.back().job_id, &result);
    ASSERT_TRUE(st.ok()) << st.ToString();
    EXPECT_EQ(result.motion.frame_count, events.back().total_frames);
    EXPECT_EQ(streamed + 4, result.motion.frame_count);  // the events leave the 4 context frames out
    EXPECT_FALSE(result.file.empty());                   // the recording asked for a BVH file
}

TEST(Replay, InvalidRequestNamesTheField) {
    ReplayServer server(Scenario("invalid_request"));
    Session s(Options(server));
    std::string job;
    const Status st = s.Submit(JobRequest{}, &job);
    EXPECT_EQ(st.code, StatusCode::InvalidArgument);
    EXPECT_EQ(st.field, "keyframes[1].frame");
    EXPECT_NE(st.message.find("sort keyframes"), std::string::npos) << st.message;
}

TEST(Replay, CancelThenWatchToCancelled) {
    ReplayServer server(Scenario("cancel"));
    Session s(Options(server));
    std::string job;
    ASSERT_TRUE(s.Submit(JobRequest{}, &job).ok());
    EXPECT_FALSE(job.empty());
    JobState state;
    ASSERT_TRUE(s.Cancel(job, &state).ok());
    EXPECT_EQ(state, JobState::Cancelled);
    Status st;
    const auto events = Events([&](const EventHandler& h) { return s.Watch(job, 0, h); }, &st);
    ASSERT_TRUE(st.ok()) << st.ToString();
    EXPECT_EQ(events.back().kind, JobEvent::Kind::Cancelled);
    pb::CancelJobRequest sent;
    ASSERT_TRUE(sent.ParseFromString(server.Sent("CancelJob", 2)));
    EXPECT_EQ(sent.job_id(), job);
}

TEST(Replay, FailureMidStream) {
    ReplayServer server(Scenario("failure_mid_stream"));
    Session s(Options(server));
    Status st;
    const auto events = Events([&](const EventHandler& h) { return s.Inbetween(JobRequest{}, h); }, &st);
    ASSERT_TRUE(st.ok()) << st.ToString();
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back().kind, JobEvent::Kind::Failed);
    EXPECT_NE(events.back().failed_code, 0);
    EXPECT_FALSE(events.back().message.empty());
}

TEST(Replay, RewatchAfterReconnect) {
    ReplayServer server(Scenario("rewatch_after_reconnect"));
    Session s(Options(server));
    std::vector<JobEvent> first;
    ASSERT_TRUE(s.Inbetween(JobRequest{}, [&](const JobEvent& e) {
        first.push_back(e);
        return first.size() < 3;  // the recording's client dropped the stream after 3 events
    }).ok());
    ASSERT_EQ(first.size(), 3u);
    Session again(Options(server));
    Status st;
    const auto rest = Events([&](const EventHandler& h) { return again.Watch(first.back().job_id, first.back().seq, h); }, &st);
    ASSERT_TRUE(st.ok()) << st.ToString();
    ASSERT_FALSE(rest.empty());
    EXPECT_EQ(rest.front().seq, 4u);
    EXPECT_EQ(rest.back().kind, JobEvent::Kind::Completed);
    pb::WatchJobRequest sent;
    ASSERT_TRUE(sent.ParseFromString(server.Sent("WatchJob", 2)));
    EXPECT_EQ(sent.after_seq(), 3u);
}

TEST(Replay, ResultOverFourMiBFitsTheDefaultLimit) {
    ReplayServer server(Scenario("result_over_4mib"));
    Session s(Options(server));  // gRPC C++'s default 4 MiB receive limit
    std::string job;
    ASSERT_TRUE(s.Submit(JobRequest{}, &job).ok());
    Result result;
    const Status st = s.DownloadResult(job, &result);
    ASSERT_TRUE(st.ok()) << st.ToString();
    EXPECT_EQ(result.motion.frame_count, 2400u);
    EXPECT_EQ(result.motion.rotations.size(), 2400u * 65 * 4);
    EXPECT_EQ(result.motion.translations.size(), 2400u * 65 * 3);
    pb::DownloadResultRequest sent;
    ASSERT_TRUE(sent.ParseFromString(server.Sent("DownloadResult", 2)));
    EXPECT_EQ(sent.max_receive_message_bytes(), uint32_t(kDefaultReceiveLimitBytes));
}

}  // namespace
}  // namespace anymole
