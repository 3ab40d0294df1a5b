// A connection to an AnyMoLe server: the handshake, chunked uploads, jobs and their event streams, results.
// Calls block; the editor runs them on a worker thread and hands results to the game thread. gRPC stays behind
// the pimpl, so this header (and everything the editor module includes) is free of gRPC and protobuf.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "AnyMoLe/Types.h"

namespace anymole {

struct SessionOptions {
    std::string target;          // "host:port"
    std::string token;           // bearer token; empty when the server demands none
    std::string tls_ca_pem;      // PEM root certificates; non-empty switches to TLS
    std::string tls_server_name; // certificate host name when it differs from target's host
    std::string client_name = "anymole-unreal";
    ProtocolVersion protocol;    // what this client announces (tests announce others)
    // Largest message this client accepts. gRPC C++'s default; results arrive in parts below it.
    int receive_limit_bytes = kDefaultReceiveLimitBytes;
    // HTTP/2 keepalive ping interval, so that a quiet queue wait is not cut by a proxy; protocol 1.2 servers
    // accept pings every 5 s or more.
    int keepalive_ms = 10000;
    double handshake_timeout_s = 10.0;
};

// Called for each event in order; return false to stop watching (the job keeps running on the server).
using EventHandler = std::function<bool(const JobEvent&)>;

class ANYMOLECLIENT_API Session {
public:
    explicit Session(SessionOptions options);
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    // The version handshake: GetServerInfo with our protocol version. A server of another major version
    // answers FAILED_PRECONDITION (and if it did not, the client refuses it the same way).
    Status Handshake(ServerInfo* out);
    // The last handshake's answer (empty before one succeeded).
    const ServerInfo& Info() const;

    // Uploads bytes in chunks of the server's advertised size with their SHA-256, so a payload the server
    // holds already is answered at once (`cached`) and not sent again.
    Status Upload(const std::string& payload, CharacterFormat format, const std::string& name, UploadResult* out);
    // Whether the server holds the character `character_id` ("sha256:<hex>"), with its skeleton when it does.
    Status GetCharacter(const std::string& character_id, bool* found, UploadResult* out = nullptr);
    // Uploads a character as CHARACTER_FORMAT_PROTO (what the editor sends), serialised deterministically so
    // that the same character hashes to the same id.
    Status UploadCharacter(const CharacterAsset& character, UploadResult* out);

    // Queues a job. With an `idempotency_key` (a fresh random string per intended job), a retried submit
    // returns the first submit's job (`existing` = true) instead of a duplicate. Every request carries this
    // client's receive limit, so the job's motion events fit it.
    Status Submit(const JobRequest& request, std::string* job_id, uint32_t* queue_position = nullptr,
                  const std::string& idempotency_key = {}, bool* existing = nullptr);
    // Streams a job's events after `after_seq` (replay, then live) until its terminal event, the handler's
    // false or StopWatching(). Unknown event kinds are skipped. With `skip_replayed_previews` the stored
    // previews of the replay are left out (a re-attaching editor needs the motion, not every old frame).
    Status Watch(const std::string& job_id, uint64_t after_seq, const EventHandler& on_event,
                 bool skip_replayed_previews = false);
    // Watch that re-attaches with the last seen sequence number when the stream drops (UNAVAILABLE), up to
    // `retries` times in a row; `last_seq` says where it stopped.
    Status Follow(const std::string& job_id, uint64_t after_seq, const EventHandler& on_event, int retries,
                  uint64_t* last_seq = nullptr);
    // Submit and stream (the Inbetween call).
    Status Inbetween(const JobRequest& request, const EventHandler& on_event);
    // Ends the Watch / Follow / Inbetween running on another thread; the job keeps running.
    void StopWatching();

    Status Cancel(const std::string& job_id, JobState* state_after = nullptr);
    // Jobs newest first; with `tags`, only those whose client_tags hold all of them.
    Status ListJobs(std::vector<JobSummary>* out, uint32_t limit = 0,
                    const std::map<std::string, std::string>& tags = {});
    // The result timeline of a completed job, streamed in parts that fit the receive limit.
    Status DownloadResult(const std::string& job_id, Result* out);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// "sha256:" + lowercase hex digest of `data`: the id the server gives these bytes.
ANYMOLECLIENT_API std::string CharacterId(const std::string& data);

}  // namespace anymole
