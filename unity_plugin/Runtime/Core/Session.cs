// The client side of one editor's conversation with a server, as a small state machine:
//   Disconnected --ConnectAsync (handshake)--> Ready --UploadAsync--> Ready (character known)
//   Ready --SubmitAsync--> Submitted --WatchAsync--> Running --terminal event--> Completed | Failed | Cancelled | Interrupted
// A job survives the editor: SubmitAsync records the job id, every event its sequence number, and a
// Snapshot of both (kept in Unity's SessionState) lets a new session after a domain reload Reattach and
// WatchJob from the last event it saw. A dropped stream (UNAVAILABLE) re-attaches the same way by itself.
using System;
using System.Collections.Generic;
using System.Security.Cryptography;
using System.Threading;
using System.Threading.Tasks;
using Google.Protobuf;
using pb = Anymole.V1;

namespace AnyMoLe.Core
{
    public enum SessionState { Disconnected, Ready, Submitted, Running, Completed, Failed, Cancelled, Interrupted }

    /// <summary>The payload encodings UploadCharacter takes (wire values).</summary>
    public enum AssetFormat { Proto = 1, Glb = 2, Fbx = 3, Bvh = 4 }

    public sealed class AnyMoLeSession : IDisposable
    {
        /// <summary>The protocol this plugin was built against (proto/anymole/v1, service/version.py).</summary>
        public const int ProtocolMajor = 1, ProtocolMinor = 2;
        public const string VersionMetadataKey = "anymole-protocol-version";
        const string Service = "/anymole.v1.AnyMoLeService/";
        /// <summary>Re-attach attempts after a dropped event stream, as the Python client does.</summary>
        const int Retries = 3;

        readonly IAnyMoLeTransport transport;
        readonly List<KeyValuePair<string, string>> metadata = new List<KeyValuePair<string, string>>();
        readonly string clientName;
        /// <summary>SHA-256 of the payloads this session uploaded: sent again as the header alone.</summary>
        readonly HashSet<string> uploaded = new HashSet<string>();

        public SessionState State { get; private set; }
        /// <summary>The server's handshake answer; null before ConnectAsync.</summary>
        public ServerInfo Info { get; private set; }
        /// <summary>The job being followed; empty before SubmitAsync or Reattach.</summary>
        public string JobId { get; private set; }
        /// <summary>Sequence number of the last event received (0: none yet).</summary>
        public ulong LastSeq { get; private set; }
        /// <summary>Joints of the job's character, for shaping motion.</summary>
        public int JointCount { get; private set; }
        /// <summary>The client tags of the job (InbetweenRequest.client_tags).</summary>
        public Dictionary<string, string> Tags { get; private set; }
        /// <summary>The largest message this client receives (grpc-dotnet's default, 4 MiB): the server sizes
        /// motion events and result parts to fit it.</summary>
        public int ReceiveLimit = 4 << 20;
        /// <summary>Set by Reattach: the replay leaves out the previews a reloaded window has no use for.</summary>
        bool skipReplayedPreviews;
        /// <summary>The gap's motion as it streamed in (provisional frames replaced by final ones).</summary>
        public JobTimeline Timeline { get; private set; }
        /// <summary>The terminal event, once the job ended.</summary>
        public JobEvent Outcome { get; private set; }

        /// <param name="token">bearer token, or null when the server needs none (keep it out of project files).</param>
        public AnyMoLeSession(IAnyMoLeTransport transport, string token = null, string clientName = "anymole-unity")
        {
            this.transport = transport;
            this.clientName = clientName;
            metadata.Add(new KeyValuePair<string, string>(VersionMetadataKey, ProtocolMajor + "." + ProtocolMinor));
            if (!string.IsNullOrEmpty(token))
                metadata.Add(new KeyValuePair<string, string>("authorization", "Bearer " + token));
            JobId = "";
            Tags = new Dictionary<string, string>();
        }

        public void Dispose()
        {
            transport.Dispose();
        }

        // ------------------------------------------------------------------------------------------ handshake

        /// <summary>GetServerInfo: our version out, the server's capabilities back. A different major version
        /// fails (FAILED_PRECONDITION from the server, or here if the server did not check).</summary>
        public async Task<ServerInfo> ConnectAsync(CancellationToken cancel = default(CancellationToken))
        {
            var req = new pb.GetServerInfoRequest
            {
                ClientProtocol = new pb.ProtocolVersion { Major = ProtocolMajor, Minor = ProtocolMinor },
                ClientName = clientName,
            };
            var raw = await transport.UnaryAsync(Service + "GetServerInfo", req.ToByteArray(), metadata, cancel);
            var info = ProtoConvert.FromProto(pb.GetServerInfoResponse.Parser.ParseFrom(raw));
            if (info.ProtocolMajor != ProtocolMajor)
                throw new AnyMoLeRpcException(RpcCode.FailedPrecondition,
                    "server " + info.ProtocolMajor + "." + info.ProtocolMinor + ", plugin " + ProtocolMajor + "." +
                    ProtocolMinor + ": update the " + (info.ProtocolMajor > ProtocolMajor ? "plugin" : "server"), "");
            Info = info;
            State = SessionState.Ready;
            return info;
        }

        void RequireReady(string what)
        {
            if (State == SessionState.Disconnected)
                throw new InvalidOperationException(what + " needs the handshake first: call ConnectAsync");
        }

        // --------------------------------------------------------------------------------------------- upload

        /// <summary>A character in canonical space, uploaded as CHARACTER_FORMAT_PROTO unless the server holds it
        /// already (asked with GetCharacter first, so a reloaded editor does not send a mesh twice).</summary>
        public Task<UploadResult> UploadCharacterAsync(Character character, CancellationToken cancel = default(CancellationToken))
        {
            return UploadAsync(ProtoConvert.ToProto(character).ToByteArray(), AssetFormat.Proto, character.Name, 0, true, cancel);
        }

        /// <summary>GetCharacter: the server's copy of a character ("sha256:" + hex), or null when it holds none.</summary>
        public async Task<UploadResult> GetCharacterAsync(string characterId, CancellationToken cancel = default(CancellationToken))
        {
            RequireReady("GetCharacterAsync");
            var req = new pb.GetCharacterRequest { CharacterId = characterId };
            var resp = pb.GetCharacterResponse.Parser.ParseFrom(
                await transport.UnaryAsync(Service + "GetCharacter", req.ToByteArray(), metadata, cancel));
            if (!resp.Found) return null;
            return new UploadResult
            {
                CharacterId = characterId, Cached = true, Name = resp.Name, VertexCount = (int)resp.VertexCount,
                Skeleton = ProtoConvert.FromProto(resp.Skeleton ?? new pb.Skeleton()),
            };
        }

        /// <summary>Uploads a payload in chunks of the server's advertised size, with its SHA-256 in the header. A
        /// payload this session uploaded before goes as the header alone (the server answers cached at once); if
        /// the server no longer holds it, the whole payload follows in a second upload. Against a server that
        /// answers before the last chunk (protocol 1.0) the remaining chunks stay here.</summary>
        /// <param name="chunkBytes">bytes per chunk; 0: the server's advertised size.</param>
        /// <param name="askFirst">ask GetCharacter before a payload this session has not sent (a server of
        /// protocol 1.2 or newer): one it holds is not uploaded at all.</param>
        public async Task<UploadResult> UploadAsync(byte[] payload, AssetFormat format, string name, int chunkBytes = 0,
                                                    bool askFirst = false, CancellationToken cancel = default(CancellationToken))
        {
            RequireReady("UploadAsync");
            var digest = Sha256Hex(payload);
            if (askFirst && !uploaded.Contains(digest) && (Info.ProtocolMinor >= 2 || Info.ProtocolMajor > 1))
            {
                var held = await GetCharacterAsync("sha256:" + digest, cancel);
                if (held != null)
                {
                    uploaded.Add(digest);
                    return held;
                }
            }
            if (uploaded.Contains(digest))
            {
                try
                {
                    var known = await Upload(payload, digest, format, name, chunkBytes, false, cancel);
                    if (known.Cached) return known;
                }
                catch (AnyMoLeRpcException exc)
                {
                    if (exc.Code == RpcCode.Unavailable || exc.Code == RpcCode.Unauthenticated) throw;
                }
                uploaded.Remove(digest);  // the server lost it (a new data directory): send it all
            }
            var result = await Upload(payload, digest, format, name, chunkBytes, true, cancel);
            uploaded.Add(digest);
            return result;
        }

        async Task<UploadResult> Upload(byte[] payload, string digest, AssetFormat format, string name, int chunkBytes,
                                        bool withChunks, CancellationToken cancel)
        {
            int step = chunkBytes > 0 ? chunkBytes : Info.UploadChunkBytes > 0 ? Info.UploadChunkBytes : 1 << 20;
            var header = new pb.UploadHeader
            {
                Format = (pb.CharacterFormat)(int)format,
                TotalBytes = (ulong)payload.Length,
                Sha256 = digest,
                Name = name ?? "",
            };
            int sent = 0;
            using (var call = transport.ClientStreaming(Service + "UploadCharacter", metadata, cancel))
            {
                await call.WriteAsync(new pb.UploadCharacterRequest { Header = header }.ToByteArray());
                for (int i = 0; withChunks && i < payload.Length && !call.Response.IsCompleted; i += step)
                {
                    int n = Math.Min(step, payload.Length - i);
                    var chunk = new pb.UploadCharacterRequest { Chunk = ByteString.CopyFrom(payload, i, n) };
                    await call.WriteAsync(chunk.ToByteArray());
                    sent++;
                }
                await call.CompleteAsync();
                var resp = pb.UploadCharacterResponse.Parser.ParseFrom(await call.Response);
                return new UploadResult
                {
                    CharacterId = resp.CharacterId, Cached = resp.Cached, Name = resp.Name,
                    Skeleton = ProtoConvert.FromProto(resp.Skeleton ?? new pb.Skeleton()),
                    VertexCount = (int)resp.VertexCount, ChunksSent = sent,
                };
            }
        }

        public static string Sha256Hex(byte[] payload)
        {
            using (var sha = SHA256.Create())
            {
                var digest = sha.ComputeHash(payload);
                var sb = new System.Text.StringBuilder(64);
                foreach (var b in digest) sb.Append(b.ToString("x2"));
                return sb.ToString();
            }
        }

        // ----------------------------------------------------------------------------------------------- jobs

        /// <summary>SubmitJob: queues the job and makes it this session's job (events from seq 0). A submit that
        /// fails with UNAVAILABLE is retried with the same idempotency key, so the server never queues it twice.</summary>
        public async Task<string> SubmitAsync(FillRequest request, CancellationToken cancel = default(CancellationToken))
        {
            RequireReady("SubmitAsync");
            var req = new pb.SubmitJobRequest
            {
                Request = ProtoConvert.ToProto(request, ReceiveLimit),
                IdempotencyKey = Guid.NewGuid().ToString("N"),
            };
            byte[] raw = null;
            for (int attempt = 0; raw == null; attempt++)
            {
                try
                {
                    raw = await transport.UnaryAsync(Service + "SubmitJob", req.ToByteArray(), metadata, cancel);
                }
                catch (AnyMoLeRpcException exc)
                {
                    if (exc.Code != RpcCode.Unavailable || attempt >= Retries) throw;
                    await Task.Delay(500 * (attempt + 1), cancel);
                }
            }
            var resp = pb.SubmitJobResponse.Parser.ParseFrom(raw);
            Follow(resp.JobId, 0, request.Context.JointCount, request.ClientTags,
                   request.Context.FrameCount, TotalFramesOf(request));
            skipReplayedPreviews = false;
            return resp.JobId;
        }

        static int TotalFramesOf(FillRequest r)
        {
            if (r.TotalFrames > 0) return r.TotalFrames;
            return r.Keyframes.Count == 0 ? r.Context.FrameCount : r.Keyframes[r.Keyframes.Count - 1].Frame + 1;
        }

        void Follow(string jobId, ulong afterSeq, int joints, Dictionary<string, string> tags, int contextFrames, int totalFrames)
        {
            JobId = jobId;
            LastSeq = afterSeq;
            JointCount = joints;
            Tags = new Dictionary<string, string>(tags);
            Outcome = null;
            Timeline = new JobTimeline(contextFrames, totalFrames, joints);
            State = SessionState.Submitted;
        }

        /// <summary>Submit, then watch to the end: see WatchAsync.</summary>
        public async Task<JobEvent> FillAsync(FillRequest request, Action<JobEvent> onEvent,
                                              CancellationToken cancel = default(CancellationToken))
        {
            await SubmitAsync(request, cancel);
            return await WatchAsync(onEvent, cancel);
        }

        /// <summary>WatchJob from the last event seen until the job's terminal event, which it returns. Events go
        /// to <paramref name="onEvent"/> in order (on the transport's thread); motion also lands in Timeline.
        /// A stream that drops with UNAVAILABLE is re-attached with after_seq up to 3 times. Cancelling
        /// <paramref name="cancel"/> only stops watching; the job runs on (CancelAsync stops it).</summary>
        public async Task<JobEvent> WatchAsync(Action<JobEvent> onEvent, CancellationToken cancel = default(CancellationToken))
        {
            if (string.IsNullOrEmpty(JobId))
                throw new InvalidOperationException("WatchAsync needs a job: call SubmitAsync or Reattach first");
            int attempts = 0;
            while (true)
            {
                try
                {
                    var req = new pb.WatchJobRequest { JobId = JobId, AfterSeq = LastSeq, SkipReplayedPreviews = skipReplayedPreviews };
                    using (var stream = transport.ServerStreaming(Service + "WatchJob", req.ToByteArray(), metadata, cancel))
                    {
                        var end = await Drain(stream, onEvent, () => attempts = 0);
                        if (end != null) return end;
                    }
                    cancel.ThrowIfCancellationRequested();  // our own cancel ends the stream
                    throw new AnyMoLeRpcException(RpcCode.DataLoss,
                        "the event stream of job " + JobId + " ended without a terminal event; watch it again", "");
                }
                catch (AnyMoLeRpcException exc)
                {
                    cancel.ThrowIfCancellationRequested();
                    if (exc.Code != RpcCode.Unavailable || ++attempts > Retries || cancel.IsCancellationRequested) throw;
                }
                await Task.Delay(500 * attempts, cancel);
            }
        }

        /// <summary>Events of one stream until its terminal one (returned) or its end (null).</summary>
        async Task<JobEvent> Drain(IResponseStream stream, Action<JobEvent> onEvent, Action received)
        {
            State = SessionState.Running;
            byte[] raw;
            while ((raw = await stream.ReadAsync()) != null)
            {
                var ev = ProtoConvert.FromProto(pb.JobEvent.Parser.ParseFrom(raw));
                if (JobId.Length == 0) JobId = ev.JobId;  // Inbetween: the id comes with the first event
                received();
                Apply(ev);
                if (onEvent != null) onEvent(ev);
                if (ev.IsTerminal) return ev;
            }
            return null;
        }

        /// <summary>Inbetween: submit and stream in one call (the job id comes with the first event). A stream
        /// that drops after that continues with WatchAsync. SubmitAsync + WatchAsync is the safer pair for an
        /// editor: the id is known before any event, and a retried submit cannot queue the job twice.</summary>
        public async Task<JobEvent> InbetweenAsync(FillRequest request, Action<JobEvent> onEvent,
                                                   CancellationToken cancel = default(CancellationToken))
        {
            RequireReady("InbetweenAsync");
            var req = ProtoConvert.ToProto(request, ReceiveLimit);
            Follow("", 0, request.Context.JointCount, request.ClientTags, request.Context.FrameCount, TotalFramesOf(request));
            skipReplayedPreviews = false;
            try
            {
                using (var stream = transport.ServerStreaming(Service + "Inbetween", req.ToByteArray(), metadata, cancel))
                {
                    var end = await Drain(stream, onEvent, () => { });
                    if (end != null) return end;
                }
                cancel.ThrowIfCancellationRequested();
            }
            catch (AnyMoLeRpcException exc)
            {
                cancel.ThrowIfCancellationRequested();
                if (exc.Code != RpcCode.Unavailable || JobId.Length == 0) throw;
            }
            if (JobId.Length == 0)
                throw new AnyMoLeRpcException(RpcCode.DataLoss, "the Inbetween stream ended before its first event; submit again", "");
            return await WatchAsync(onEvent, cancel);
        }

        void Apply(JobEvent ev)
        {
            if (ev.Seq <= LastSeq) return;  // a replayed event seen before a re-attach
            LastSeq = ev.Seq;
            var motion = ev as MotionEvent;
            if (motion != null) Timeline.Add(motion);
            if (ev.IsTerminal)
            {
                Outcome = ev;
                State = ev is CompletedEvent ? SessionState.Completed
                      : ev is FailedEvent ? SessionState.Failed
                      : ev is CancelledEvent ? SessionState.Cancelled : SessionState.Interrupted;
            }
        }

        /// <summary>CancelJob for this session's job; its Cancelled event still arrives through WatchAsync.</summary>
        public async Task<JobState> CancelAsync(CancellationToken cancel = default(CancellationToken))
        {
            var req = new pb.CancelJobRequest { JobId = JobId };
            var raw = await transport.UnaryAsync(Service + "CancelJob", req.ToByteArray(), metadata, cancel);
            return ProtoConvert.FromProto(pb.CancelJobResponse.Parser.ParseFrom(raw).State);
        }

        /// <summary>The jobs the server knows, newest first (every page); only those whose client tags hold every
        /// entry of <paramref name="tags"/> when given; at most <paramref name="limit"/> (0: all).</summary>
        public async Task<List<JobSummary>> ListJobsAsync(Dictionary<string, string> tags = null, int limit = 0,
                                                          CancellationToken cancel = default(CancellationToken))
        {
            var req = new pb.ListJobsRequest { Limit = (uint)limit };
            if (tags != null) req.ClientTags.Add(tags);
            var jobs = new List<JobSummary>();
            do
            {
                var raw = await transport.UnaryAsync(Service + "ListJobs", req.ToByteArray(), metadata, cancel);
                var page = pb.ListJobsResponse.Parser.ParseFrom(raw);
                foreach (var j in page.Jobs) jobs.Add(ProtoConvert.FromProto(j));
                req.PageToken = page.NextPageToken;
            } while (!string.IsNullOrEmpty(req.PageToken));
            return jobs;
        }

        /// <summary>The newest job with these client tags, or null: how a window that lost even its snapshot
        /// finds its job again.</summary>
        public async Task<JobSummary> FindJobAsync(Dictionary<string, string> tags, CancellationToken cancel = default(CancellationToken))
        {
            var jobs = await ListJobsAsync(tags, 1, cancel);
            return jobs.Count == 0 ? null : jobs[0];
        }

        /// <summary>The whole result timeline of a completed job (context and fill), fetched with DownloadResult
        /// in parts that each fit ReceiveLimit, so results of any size arrive.</summary>
        public async Task<Motion> DownloadResultAsync(CancellationToken cancel = default(CancellationToken))
        {
            var req = new pb.DownloadResultRequest { JobId = JobId, MaxReceiveMessageBytes = (uint)ReceiveLimit };
            var clip = new pb.Clip();
            pb.ResultHeader header = null;
            using (var stream = transport.ServerStreaming(Service + "DownloadResult", req.ToByteArray(), metadata, cancel))
            {
                byte[] raw;
                while ((raw = await stream.ReadAsync()) != null)
                {
                    var part = pb.DownloadResultResponse.Parser.ParseFrom(raw);
                    if (part.PartCase == pb.DownloadResultResponse.PartOneofCase.Header)
                    {
                        header = part.Header;
                        clip.Fps = header.Fps;
                    }
                    else if (part.PartCase == pb.DownloadResultResponse.PartOneofCase.Motion)
                    {
                        var m = part.Motion;
                        if (m.FrameStart != clip.FrameCount)
                            throw new AnyMoLeRpcException(RpcCode.DataLoss, "the result of job " + JobId + " skipped from frame " +
                                clip.FrameCount + " to " + m.FrameStart + "; update the plugin or the server", "");
                        if (JointCount == 0) JointCount = (int)m.JointCount;  // 0 from servers before 1.2: inferred below
                        clip.FrameCount += m.FrameCount;
                        clip.Rotations.Add(m.Rotations);
                        clip.RootTranslations.Add(m.RootTranslations);
                        clip.Translations.Add(m.Translations);
                    }
                }
            }
            if (header == null || clip.FrameCount != header.TotalFrames)
                throw new AnyMoLeRpcException(RpcCode.DataLoss, "the result of job " + JobId + " arrived incomplete; download it again", "");
            return ProtoConvert.FromProto(clip, JointCount);
        }

        // ------------------------------------------------------------------------------------------- reattach

        /// <summary>What a new session needs to pick this job up again (store it in Unity's SessionState).</summary>
        public SessionSnapshot Snapshot()
        {
            return new SessionSnapshot
            {
                JobId = JobId, LastSeq = LastSeq, JointCount = JointCount, Tags = new Dictionary<string, string>(Tags),
                ContextFrames = Timeline == null ? 0 : Timeline.ContextFrames,
                TotalFrames = Timeline == null ? 0 : Timeline.TotalFrames,
            };
        }

        /// <summary>Follow a job an earlier session (before a domain reload) submitted; WatchAsync then resumes
        /// after the snapshot's last event. The timeline starts empty: frames seen before are lost with the old
        /// domain, so the result comes from DownloadResultAsync; previews stored before are skipped.</summary>
        public void Reattach(SessionSnapshot snapshot)
        {
            RequireReady("Reattach");
            Follow(snapshot.JobId, snapshot.LastSeq, snapshot.JointCount, snapshot.Tags,
                   snapshot.ContextFrames, snapshot.TotalFrames);
            skipReplayedPreviews = true;
        }
    }

    /// <summary>A job id with the last sequence number seen, in one line (SessionState stores strings).</summary>
    public sealed class SessionSnapshot
    {
        public string JobId = "";
        public Dictionary<string, string> Tags = new Dictionary<string, string>();
        public ulong LastSeq;
        public int JointCount, ContextFrames, TotalFrames;

        public override string ToString()
        {
            var parts = new List<string> { "1", JobId, LastSeq.ToString(), JointCount.ToString(), ContextFrames.ToString(), TotalFrames.ToString() };
            foreach (var kv in Tags) parts.Add(B64(kv.Key) + "=" + B64(kv.Value));
            return string.Join(";", parts.ToArray());
        }

        public static SessionSnapshot Parse(string text)
        {
            var p = (text ?? "").Split(';');
            try
            {
                if (p.Length < 6 || p[0] != "1") throw new FormatException();
                var s = new SessionSnapshot
                {
                    JobId = p[1], LastSeq = ulong.Parse(p[2]), JointCount = int.Parse(p[3]), ContextFrames = int.Parse(p[4]),
                    TotalFrames = int.Parse(p[5]),
                };
                for (int i = 6; i < p.Length; i++)
                {
                    var kv = p[i].Split('=');
                    s.Tags[Text(kv[0])] = Text(kv[1]);
                }
                return s;
            }
            catch (Exception exc)
            {
                if (exc is FormatException || exc is IndexOutOfRangeException || exc is OverflowException)
                    throw new FormatException("not a saved AnyMoLe job: '" + text + "'");
                throw;
            }
        }

        // Base64 keeps ';' and '=' of tag text out of the separators ('=' padding only ends a token).
        static string B64(string s) { return Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes(s)).Replace('=', '_'); }
        static string Text(string b) { return System.Text.Encoding.UTF8.GetString(Convert.FromBase64String(b.Replace('_', '='))); }
    }
}
