// The session against scripted server answers (ReplayTransport): what it does when a job fails mid-stream, when
// a stream drops, when the server names a bad field in the error details, on an upload cache hit and on a
// protocol mismatch. No server needed: these run in the Unity Test Runner and under mono.
using System.Collections.Generic;
using System.Linq;
using AnyMoLe.Core;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using NUnit.Framework;
using pb = Anymole.V1;

namespace AnyMoLe.Tests
{
    [TestFixture]
    public class ReplayTests
    {
        const string Service = "/anymole.v1.AnyMoLeService/";

        static RecordedCall Ok(string method, params IMessage[] responses)
        {
            return new RecordedCall { Method = Service + method, Responses = responses.Select(r => r.ToByteArray()).ToList() };
        }

        static RecordedCall Handshake(uint major = 1)
        {
            var info = new pb.GetServerInfoResponse
            {
                ServerVersion = "0.1.0", Protocol = new pb.ProtocolVersion { Major = major, Minor = 2 },
                Capabilities = new pb.Capabilities { Limits = new pb.Limits { UploadChunkBytes = 4 } },
            };
            return Ok("GetServerInfo", info);
        }

        static pb.JobEvent Progress(ulong seq, float fraction)
        {
            return new pb.JobEvent { JobId = "job-1", Seq = seq, Progress = new pb.Progress { Stage = "interp", Fraction = fraction } };
        }

        static FillRequest Request()
        {
            var context = new Motion { Fps = 30, FrameCount = 1, JointCount = 1, Rotations = new[] { 0f, 0f, 0f, 1f }, RootTranslations = new float[3] };
            var r = new FillRequest { CharacterId = "sha256:00", Context = context };
            r.Keyframes.Add(new Keyframe { Frame = 3, Rotations = new[] { 0f, 0f, 0f, 1f }, RootTranslation = new float[3] });
            return r;
        }

        static T Wait<T>(System.Threading.Tasks.Task<T> task) { return task.GetAwaiter().GetResult(); }

        [Test]
        public void AJobFailingMidStreamEndsWithTheServersMessageAndField()
        {
            var motion = new pb.MotionChunk { FrameStart = 1, FrameCount = 3 };
            for (int f = 0; f < 3; f++) { motion.Rotations.Add(new[] { 0f, 0f, 0f, 1f }); motion.RootTranslations.Add(new float[3]); }
            var failed = new pb.Failed { Code = 13, Message = "the estimator diverged; try another seed", Field = "seed" };
            var t = new ReplayTransport(new[]
            {
                Handshake(), Ok("SubmitJob", new pb.SubmitJobResponse { JobId = "job-1" }),
                Ok("WatchJob", Progress(1, 0.5f), new pb.JobEvent { JobId = "job-1", Seq = 2, Motion = motion },
                   new pb.JobEvent { JobId = "job-1", Seq = 3, Failed = failed }),
            });
            var s = new AnyMoLeSession(t);
            Wait(s.ConnectAsync());
            Wait(s.SubmitAsync(Request()));
            var seen = new List<JobEvent>();
            var end = (FailedEvent)Wait(s.WatchAsync(seen.Add));
            Assert.AreEqual(SessionState.Failed, s.State);
            Assert.AreEqual(RpcCode.Internal, end.Code);
            Assert.AreEqual("seed", end.Field);
            Assert.AreEqual("the estimator diverged; try another seed", end.Message);
            Assert.AreEqual(3, seen.Count);
            Assert.AreEqual(3, s.Timeline.Received);
            Assert.AreEqual(0, s.Timeline.Final);
            Assert.AreEqual(0, t.Remaining);
        }

        [Test]
        public void AnEventOfAKindAddedLaterIsSkippedButCounted()
        {
            // A JobEvent whose kind this plugin's messages lack parses with no kind set (its field is unknown).
            var future = new pb.JobEvent { JobId = "job-1", Seq = 2 }.ToByteArray()
                .Concat(new byte[] { 0xCA, 0x01, 0x00 }).ToArray();  // field 25, length-delimited, empty
            var t = new ReplayTransport(new[]
            {
                Handshake(), Ok("SubmitJob", new pb.SubmitJobResponse { JobId = "job-1" }),
                new RecordedCall { Method = Service + "WatchJob", Responses = { Progress(1, 0.2f).ToByteArray(), future,
                    new pb.JobEvent { JobId = "job-1", Seq = 3, Completed = new pb.Completed() }.ToByteArray() } },
            });
            var s = new AnyMoLeSession(t);
            Wait(s.ConnectAsync());
            Wait(s.SubmitAsync(Request()));
            var seen = new List<JobEvent>();
            Assert.IsInstanceOf<CompletedEvent>(Wait(s.WatchAsync(seen.Add)));
            Assert.IsInstanceOf<UnknownEvent>(seen[1]);
            Assert.AreEqual(2ul, seen[1].Seq);
            Assert.AreEqual(3ul, s.LastSeq);
            Assert.AreEqual(JobState.Unspecified, ProtoConvert.FromProto((pb.JobState)42));
        }

        [Test]
        public void ADroppedStreamIsWatchedAgainAfterTheLastEventSeen()
        {
            var t = new ReplayTransport(new[]
            {
                Handshake(), Ok("SubmitJob", new pb.SubmitJobResponse { JobId = "job-1" }),
                new RecordedCall { Method = Service + "WatchJob", Responses = { Progress(1, 0.2f).ToByteArray(), Progress(2, 0.4f).ToByteArray() },
                                   StatusCode = (int)RpcCode.Unavailable, StatusMessage = "connection reset" },
                Ok("WatchJob", Progress(3, 0.8f), new pb.JobEvent { JobId = "job-1", Seq = 4, Completed = new pb.Completed { Summary = "done" } }),
            });
            var s = new AnyMoLeSession(t);
            Wait(s.ConnectAsync());
            Wait(s.SubmitAsync(Request()));
            var seen = new List<JobEvent>();
            Assert.IsInstanceOf<CompletedEvent>(Wait(s.WatchAsync(seen.Add)));
            CollectionAssert.AreEqual(new ulong[] { 1, 2, 3, 4 }, seen.Select(e => e.Seq).ToArray());
            var watches = t.Sent.Where(c => c.Key.EndsWith("WatchJob")).Select(c => pb.WatchJobRequest.Parser.ParseFrom(c.Value[0])).ToList();
            CollectionAssert.AreEqual(new ulong[] { 0, 2 }, watches.Select(w => w.AfterSeq).ToArray());
        }

        [Test]
        public void ARetriedSubmitKeepsItsIdempotencyKey()
        {
            var t = new ReplayTransport(new[]
            {
                Handshake(), new RecordedCall { Method = Service + "SubmitJob", StatusCode = (int)RpcCode.Unavailable, StatusMessage = "reset" },
                Ok("SubmitJob", new pb.SubmitJobResponse { JobId = "job-1", Existing = true }),
            });
            var s = new AnyMoLeSession(t);
            Wait(s.ConnectAsync());
            Assert.AreEqual("job-1", Wait(s.SubmitAsync(Request())));
            var keys = t.Sent.Where(c => c.Key.EndsWith("SubmitJob")).Select(c => pb.SubmitJobRequest.Parser.ParseFrom(c.Value[0]).IdempotencyKey).ToList();
            Assert.AreEqual(2, keys.Count);
            Assert.AreEqual(keys[0], keys[1]);
            Assert.AreEqual(32, keys[0].Length);
            Assert.AreEqual(4u << 20, pb.SubmitJobRequest.Parser.ParseFrom(t.Sent[1].Value[0]).Request.MaxReceiveMessageBytes);
        }

        static byte[] BadRequestStatus(string field, string description)
        {
            // google.rpc.Status { code = 3, message, details = [Any(BadRequest { field_violations = [{field, description}] })] }
            var violation = new System.IO.MemoryStream();
            var o = new CodedOutputStream(violation);
            o.WriteTag(1, WireFormat.WireType.LengthDelimited); o.WriteString(field);
            o.WriteTag(2, WireFormat.WireType.LengthDelimited); o.WriteString(description);
            o.Flush();
            var bad = new System.IO.MemoryStream();
            o = new CodedOutputStream(bad);
            o.WriteTag(1, WireFormat.WireType.LengthDelimited); o.WriteBytes(ByteString.CopyFrom(violation.ToArray()));
            o.Flush();
            var any = new Any { TypeUrl = "type.googleapis.com/google.rpc.BadRequest", Value = ByteString.CopyFrom(bad.ToArray()) };
            var status = new System.IO.MemoryStream();
            o = new CodedOutputStream(status);
            o.WriteTag(1, WireFormat.WireType.Varint); o.WriteInt32(3);
            o.WriteTag(2, WireFormat.WireType.LengthDelimited); o.WriteString(description);
            o.WriteTag(3, WireFormat.WireType.LengthDelimited); o.WriteBytes(any.ToByteString());
            o.Flush();
            return status.ToArray();
        }

        [Test]
        public void AnErrorNamesTheFieldFromItsBadRequestDetail()
        {
            var t = new ReplayTransport(new[]
            {
                Handshake(),
                new RecordedCall { Method = Service + "SubmitJob", StatusCode = 3, StatusMessage = "context.fps must be positive, got 0",
                                   StatusDetails = BadRequestStatus("context.fps", "must be positive, got 0") },
            });
            var s = new AnyMoLeSession(t);
            Wait(s.ConnectAsync());
            var exc = Assert.Throws<AnyMoLeRpcException>(() => Wait(s.SubmitAsync(Request())));
            Assert.AreEqual(RpcCode.InvalidArgument, exc.Code);
            Assert.AreEqual("context.fps", exc.Field);
            Assert.AreEqual("context.fps must be positive, got 0", exc.Detail);
        }

        [Test]
        public void APayloadUploadedBeforeGoesAsTheHeaderAlone()
        {
            var payload = new byte[] { 1, 2, 3, 4, 5, 6, 7, 8, 9 };
            var t = new ReplayTransport(new[]
            {
                Handshake(), Ok("UploadCharacter", new pb.UploadCharacterResponse { CharacterId = "sha256:ab" }),
                Ok("UploadCharacter", new pb.UploadCharacterResponse { CharacterId = "sha256:ab", Cached = true }),
            });
            var s = new AnyMoLeSession(t);
            Wait(s.ConnectAsync());
            var first = Wait(s.UploadAsync(payload, AssetFormat.Glb, "x"));
            Assert.AreEqual(3, first.ChunksSent);  // 4-byte chunks, the handshake's advertised size
            Assert.AreEqual(4, t.Sent[1].Value.Count);
            var again = Wait(s.UploadAsync(payload, AssetFormat.Glb, "x"));
            Assert.IsTrue(again.Cached);
            Assert.AreEqual(0, again.ChunksSent);
            Assert.AreEqual(1, t.Sent[2].Value.Count);
            var header = pb.UploadCharacterRequest.Parser.ParseFrom(t.Sent[2].Value[0]).Header;
            Assert.AreEqual(9ul, header.TotalBytes);
            Assert.AreEqual(AnyMoLeSession.Sha256Hex(payload), header.Sha256);
        }

        [Test]
        public void AHeaderAloneThatTheServerNoLongerKnowsIsFollowedByTheWholePayload()
        {
            var payload = new byte[] { 1, 2, 3, 4, 5 };
            var t = new ReplayTransport(new[]
            {
                Handshake(), Ok("UploadCharacter", new pb.UploadCharacterResponse { CharacterId = "sha256:ab" }),
                new RecordedCall { Method = Service + "UploadCharacter", StatusCode = 3, StatusMessage = "chunk: received 0 of 5 bytes" },
                Ok("UploadCharacter", new pb.UploadCharacterResponse { CharacterId = "sha256:ab" }),
            });
            var s = new AnyMoLeSession(t);
            Wait(s.ConnectAsync());
            Wait(s.UploadAsync(payload, AssetFormat.Glb, "x"));
            var again = Wait(s.UploadAsync(payload, AssetFormat.Glb, "x"));
            Assert.AreEqual(2, again.ChunksSent);
            CollectionAssert.AreEqual(new[] { 3, 1, 3 }, t.Sent.Skip(1).Select(c => c.Value.Count).ToArray());
            Assert.AreEqual(0, t.Remaining);
        }

        [Test]
        public void AServerOfAnotherMajorVersionIsRefusedWithWhatToUpdate()
        {
            var s = new AnyMoLeSession(new ReplayTransport(new[] { Handshake(2) }));
            var exc = Assert.Throws<AnyMoLeRpcException>(() => Wait(s.ConnectAsync()));
            Assert.AreEqual(RpcCode.FailedPrecondition, exc.Code);
            StringAssert.Contains("update the plugin", exc.Detail);
            Assert.AreEqual(SessionState.Disconnected, s.State);
        }
    }
}
