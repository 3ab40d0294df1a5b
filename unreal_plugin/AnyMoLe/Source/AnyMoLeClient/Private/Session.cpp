#include "AnyMoLe/Session.h"

#include <openssl/evp.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <thread>

#include "ProtoConvert.h"

namespace anymole {
namespace {

namespace pb = ::anymole::v1;

const char kVersionKey[] = "anymole-protocol-version";

Status Error(StatusCode code, std::string message, std::string field = {}) {
    return Status{code, std::move(message), std::move(field)};
}

}  // namespace

std::string CharacterId(const std::string& data) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr);
    static const char kHex[] = "0123456789abcdef";
    std::string out = "sha256:";
    for (unsigned int i = 0; i < len; ++i) {
        out += kHex[digest[i] >> 4];
        out += kHex[digest[i] & 15];
    }
    return out;
}

struct Session::Impl {
    SessionOptions options;
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<pb::AnyMoLeService::Stub> stub;
    ServerInfo info;
    std::mutex watch_mutex;                 // guards `watching`
    grpc::ClientContext* watching = nullptr;  // the open event stream, for StopWatching

    explicit Impl(SessionOptions opts) : options(std::move(opts)) {
        grpc::ChannelArguments args;
        args.SetMaxReceiveMessageSize(options.receive_limit_bytes);
        args.SetMaxSendMessageSize(-1);  // uploads are chunked below the server's limit anyway
        args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, options.keepalive_ms);
        args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20000);
        args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
        args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
        std::shared_ptr<grpc::ChannelCredentials> creds;
        if (options.tls_ca_pem.empty()) {
            creds = grpc::InsecureChannelCredentials();
        } else {
            grpc::SslCredentialsOptions ssl;
            ssl.pem_root_certs = options.tls_ca_pem;
            creds = grpc::SslCredentials(ssl);
            if (!options.tls_server_name.empty()) args.SetSslTargetNameOverride(options.tls_server_name);
        }
        channel = grpc::CreateCustomChannel(options.target, creds, args);
        stub = pb::AnyMoLeService::NewStub(channel);
    }

    // Every call carries the protocol version and, when set, the bearer token.
    void Prepare(grpc::ClientContext* ctx) const {
        ctx->AddMetadata(kVersionKey,
                         std::to_string(options.protocol.major) + "." + std::to_string(options.protocol.minor));
        if (!options.token.empty()) ctx->AddMetadata("authorization", "Bearer " + options.token);
    }

    // The wire request, with this client's receive limit so that the job's motion events fit it.
    void ToRequest(const JobRequest& in, pb::InbetweenRequest* out) const {
        proto::ToProto(in, out);
        out->set_max_receive_message_bytes(static_cast<uint32_t>(options.receive_limit_bytes));
    }

    uint32_t ChunkBytes() const {
        const uint32_t advertised = info.limits.upload_chunk_bytes ? info.limits.upload_chunk_bytes : 1u << 20;
        // A chunk must also fit the server's message limit with its framing.
        return info.limits.max_message_bytes ? static_cast<uint32_t>(std::min<uint64_t>(
                                                   advertised, info.limits.max_message_bytes / 2))
                                             : advertised;
    }

    // Runs one server stream of events, registering its context for StopWatching.
    template <typename Open>
    Status Stream(Open open, const EventHandler& on_event, uint64_t* last_seq) {
        grpc::ClientContext ctx;
        Prepare(&ctx);
        {
            std::lock_guard<std::mutex> lock(watch_mutex);
            watching = &ctx;
        }
        auto reader = open(&ctx);
        pb::JobEvent msg;
        bool handler_stopped = false;
        while (reader->Read(&msg)) {
            JobEvent ev = proto::FromProto(msg);
            if (last_seq) *last_seq = ev.seq;
            if (ev.kind == JobEvent::Kind::Unknown) continue;
            if (!on_event(ev)) {
                handler_stopped = true;
                ctx.TryCancel();
                break;
            }
            if (ev.IsTerminal()) break;
        }
        const grpc::Status st = reader->Finish();
        {
            std::lock_guard<std::mutex> lock(watch_mutex);
            watching = nullptr;
        }
        if (handler_stopped) return Status{};
        // A terminal event may be followed by the server closing the stream; both are a clean end.
        if (st.ok()) return Status{};
        return proto::FromGrpc(st);
    }
};

Session::Session(SessionOptions options) : impl_(new Impl(std::move(options))) {}
Session::~Session() = default;

const ServerInfo& Session::Info() const { return impl_->info; }

Status Session::Handshake(ServerInfo* out) {
    grpc::ClientContext ctx;
    impl_->Prepare(&ctx);
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(static_cast<int64_t>(impl_->options.handshake_timeout_s * 1000)));
    pb::GetServerInfoRequest req;
    req.mutable_client_protocol()->set_major(impl_->options.protocol.major);
    req.mutable_client_protocol()->set_minor(impl_->options.protocol.minor);
    req.set_client_name(impl_->options.client_name);
    pb::GetServerInfoResponse resp;
    const grpc::Status st = impl_->stub->GetServerInfo(&ctx, req, &resp);
    if (!st.ok()) return proto::FromGrpc(st);
    ServerInfo info = proto::FromProto(resp);
    if (info.protocol.major != impl_->options.protocol.major) {
        return Error(StatusCode::FailedPrecondition,
                     "server " + std::to_string(info.protocol.major) + ".x, plugin " +
                         std::to_string(impl_->options.protocol.major) + "." +
                         std::to_string(impl_->options.protocol.minor) + ": update the plugin or the server");
    }
    impl_->info = info;
    if (out) *out = std::move(info);
    return Status{};
}

Status Session::Upload(const std::string& payload, CharacterFormat format, const std::string& name,
                       UploadResult* out) {
    grpc::ClientContext ctx;
    impl_->Prepare(&ctx);
    pb::UploadCharacterResponse resp;
    auto writer = impl_->stub->UploadCharacter(&ctx, &resp);
    pb::UploadCharacterRequest msg;
    pb::UploadHeader* header = msg.mutable_header();
    header->set_format(static_cast<pb::CharacterFormat>(format));
    header->set_total_bytes(payload.size());
    header->set_sha256(CharacterId(payload).substr(7));
    header->set_name(name);
    // A Write that fails means the server has answered already (a cache hit after the header, or an
    // error): stop sending and read its answer.
    bool open = writer->Write(msg);
    const size_t step = impl_->ChunkBytes();
    for (size_t at = 0; open && at < payload.size(); at += step) {
        msg.set_chunk(payload.substr(at, step));
        open = writer->Write(msg);
    }
    if (open) writer->WritesDone();
    const grpc::Status st = writer->Finish();
    if (!st.ok()) return proto::FromGrpc(st);
    if (out) {
        out->character_id = resp.character_id();
        out->cached = resp.cached();
        out->skeleton = proto::FromProto(resp.skeleton());
        out->vertex_count = resp.vertex_count();
        out->name = resp.name();
    }
    return Status{};
}

Status Session::GetCharacter(const std::string& character_id, bool* found, UploadResult* out) {
    grpc::ClientContext ctx;
    impl_->Prepare(&ctx);
    pb::GetCharacterRequest req;
    req.set_character_id(character_id);
    pb::GetCharacterResponse resp;
    const grpc::Status st = impl_->stub->GetCharacter(&ctx, req, &resp);
    if (!st.ok()) return proto::FromGrpc(st);
    *found = resp.found();
    if (out && resp.found()) {
        out->character_id = character_id;
        out->cached = true;
        out->skeleton = proto::FromProto(resp.skeleton());
        out->vertex_count = resp.vertex_count();
        out->name = resp.name();
    }
    return Status{};
}

Status Session::UploadCharacter(const CharacterAsset& character, UploadResult* out) {
    pb::CharacterAsset msg;
    proto::ToProto(character, &msg);
    std::string payload;
    {
        google::protobuf::io::StringOutputStream stream(&payload);
        google::protobuf::io::CodedOutputStream coded(&stream);
        coded.SetSerializationDeterministic(true);
        msg.SerializeToCodedStream(&coded);
    }
    return Upload(payload, CharacterFormat::Proto, character.name, out);
}

Status Session::Submit(const JobRequest& request, std::string* job_id, uint32_t* queue_position,
                       const std::string& idempotency_key, bool* existing) {
    grpc::ClientContext ctx;
    impl_->Prepare(&ctx);
    pb::SubmitJobRequest req;
    impl_->ToRequest(request, req.mutable_request());
    req.set_idempotency_key(idempotency_key);
    pb::SubmitJobResponse resp;
    const grpc::Status st = impl_->stub->SubmitJob(&ctx, req, &resp);
    if (!st.ok()) return proto::FromGrpc(st);
    if (job_id) *job_id = resp.job_id();
    if (queue_position) *queue_position = resp.position();
    if (existing) *existing = resp.existing();
    return Status{};
}

Status Session::Watch(const std::string& job_id, uint64_t after_seq, const EventHandler& on_event,
                      bool skip_replayed_previews) {
    pb::WatchJobRequest req;
    req.set_job_id(job_id);
    req.set_after_seq(after_seq);
    req.set_skip_replayed_previews(skip_replayed_previews);
    return impl_->Stream([&](grpc::ClientContext* ctx) { return impl_->stub->WatchJob(ctx, req); }, on_event,
                         nullptr);
}

Status Session::Follow(const std::string& job_id, uint64_t after_seq, const EventHandler& on_event, int retries,
                       uint64_t* last_seq) {
    uint64_t seq = after_seq;
    int failures = 0;
    for (;;) {
        pb::WatchJobRequest req;
        req.set_job_id(job_id);
        req.set_after_seq(seq);
        const uint64_t before = seq;
        Status st = impl_->Stream([&](grpc::ClientContext* ctx) { return impl_->stub->WatchJob(ctx, req); },
                                  on_event, &seq);
        if (last_seq) *last_seq = seq;
        if (st.code != StatusCode::Unavailable) return st;
        failures = seq > before ? 1 : failures + 1;  // progress resets the count
        if (failures > retries) return st;
        std::this_thread::sleep_for(std::chrono::milliseconds(250 * failures));
    }
}

Status Session::Inbetween(const JobRequest& request, const EventHandler& on_event) {
    pb::InbetweenRequest req;
    impl_->ToRequest(request, &req);
    return impl_->Stream([&](grpc::ClientContext* ctx) { return impl_->stub->Inbetween(ctx, req); }, on_event,
                         nullptr);
}

void Session::StopWatching() {
    std::lock_guard<std::mutex> lock(impl_->watch_mutex);
    if (impl_->watching) impl_->watching->TryCancel();
}

Status Session::Cancel(const std::string& job_id, JobState* state_after) {
    grpc::ClientContext ctx;
    impl_->Prepare(&ctx);
    pb::CancelJobRequest req;
    req.set_job_id(job_id);
    pb::CancelJobResponse resp;
    const grpc::Status st = impl_->stub->CancelJob(&ctx, req, &resp);
    if (!st.ok()) return proto::FromGrpc(st);
    if (state_after) *state_after = static_cast<JobState>(resp.state() <= pb::JOB_STATE_INTERRUPTED ? resp.state() : 0);
    return Status{};
}

Status Session::ListJobs(std::vector<JobSummary>* out, uint32_t limit,
                         const std::map<std::string, std::string>& tags) {
    out->clear();
    std::string token;
    do {  // every page (each fits 4 MiB) until the server sends no next token
        grpc::ClientContext ctx;
        impl_->Prepare(&ctx);
        pb::ListJobsRequest req;
        req.set_limit(limit);
        req.set_page_token(token);
        req.mutable_client_tags()->insert(tags.begin(), tags.end());
        pb::ListJobsResponse resp;
        const grpc::Status st = impl_->stub->ListJobs(&ctx, req, &resp);
        if (!st.ok()) return proto::FromGrpc(st);
        for (const pb::JobSummary& j : resp.jobs()) out->push_back(proto::FromProto(j));
        token = resp.next_page_token();
    } while (!token.empty());
    return Status{};
}

Status Session::DownloadResult(const std::string& job_id, Result* out) {
    grpc::ClientContext ctx;
    impl_->Prepare(&ctx);
    pb::DownloadResultRequest req;
    req.set_job_id(job_id);
    req.set_max_receive_message_bytes(static_cast<uint32_t>(impl_->options.receive_limit_bytes));
    auto reader = impl_->stub->DownloadResult(&ctx, req);
    pb::DownloadResultResponse part;
    Result result;
    bool have_header = false;
    uint32_t total_frames = 0;
    Status bad;
    while (bad.ok() && reader->Read(&part)) {
        switch (part.part_case()) {
            case pb::DownloadResultResponse::kHeader:
                have_header = true;
                result.motion.fps = part.header().fps();
                total_frames = part.header().total_frames();
                result.file_name = part.header().file_name();
                break;
            case pb::DownloadResultResponse::kMotion: {
                const pb::MotionChunk& c = part.motion();
                if (c.frame_start() != result.motion.frame_count) {
                    bad = Error(StatusCode::DataLoss, "the result of job " + job_id + " skipped from frame " +
                                                          std::to_string(result.motion.frame_count) + " to " +
                                                          std::to_string(c.frame_start()));
                    ctx.TryCancel();
                    break;
                }
                result.motion.frame_count += c.frame_count();
                Clip& m = result.motion;
                m.rotations.insert(m.rotations.end(), c.rotations().begin(), c.rotations().end());
                m.root_translations.insert(m.root_translations.end(), c.root_translations().begin(),
                                           c.root_translations().end());
                m.translations.insert(m.translations.end(), c.translations().begin(), c.translations().end());
                break;
            }
            case pb::DownloadResultResponse::kFileChunk:
                result.file += part.file_chunk();
                break;
            default:  // a part added after this client was built
                break;
        }
    }
    const grpc::Status st = reader->Finish();
    if (!bad.ok()) return bad;
    if (!st.ok()) return proto::FromGrpc(st);
    if (!have_header || result.motion.frame_count != total_frames) {
        return Error(StatusCode::DataLoss, "the result of job " + job_id + " arrived incomplete (" +
                                               std::to_string(result.motion.frame_count) + " of " +
                                               std::to_string(total_frames) + " frames); download it again");
    }
    *out = std::move(result);
    return Status{};
}

}  // namespace anymole
