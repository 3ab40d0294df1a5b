// The core replays tests/data/streams/ (what the real server answered the Python client, recorded by
// scripts/record_streams.py): each scenario's responses are fed to AnyMoLeSession through ReplayTransport, and
// what the session sends is compared, parsed, with what the Python client sent.
using System;
using System.Collections;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Threading;
using System.Web.Script.Serialization;
using AnyMoLe.Core;
using Google.Protobuf;
using NUnit.Framework;
using pb = Anymole.V1;

namespace AnyMoLe.Tests
{
    [TestFixture]
    public class RecordedStreamTests
    {
        static string Streams { get { return Path.Combine(Paths.Repo, "tests/data/streams"); } }

        /// <summary>A scenario's calls, and the request messages the Python client sent in each.</summary>
        static List<KeyValuePair<RecordedCall, List<byte[]>>> Scenario(string name)
        {
            var index = new JavaScriptSerializer().Deserialize<Dictionary<string, object>>(File.ReadAllText(Path.Combine(Streams, "index.json")));
            var scenario = ((ArrayList)index["scenarios"]).Cast<Dictionary<string, object>>().Single(s => (string)s["name"] == name);
            var calls = new List<KeyValuePair<RecordedCall, List<byte[]>>>();
            foreach (Dictionary<string, object> c in (ArrayList)scenario["calls"])
            {
                var status = (Dictionary<string, object>)c["status"];
                object details;
                var call = new RecordedCall
                {
                    Method = (string)c["method"],
                    Responses = RecordedCall.ReadFramed(File.ReadAllBytes(Path.Combine(Streams, (string)c["responses"]))),
                    StatusCode = Convert.ToInt32(status["code_number"]),
                    StatusMessage = (string)status["message"],
                    StatusDetails = status.TryGetValue("status_details_bin", out details) ? Convert.FromBase64String((string)details) : null,
                };
                Assert.AreEqual(Convert.ToInt32(c["response_count"]), call.Responses.Count, c["responses"].ToString());
                calls.Add(new KeyValuePair<RecordedCall, List<byte[]>>(call,
                    RecordedCall.ReadFramed(File.ReadAllBytes(Path.Combine(Streams, (string)c["requests"])))));
            }
            return calls;
        }

        static IEnumerable<RecordedCall> Calls(params string[] scenarios)
        {
            return scenarios.SelectMany(s => Scenario(s).Select(c => c.Key));
        }

        static List<byte[]> Requests(string scenario, int call)
        {
            return Scenario(scenario)[call].Value;
        }

        /// <summary>A session on a replay of the handshake followed by <paramref name="scenarios"/>.</summary>
        static AnyMoLeSession Session(out ReplayTransport transport, params string[] scenarios)
        {
            transport = new ReplayTransport(Calls(new[] { "handshake" }.Concat(scenarios).ToArray()));
            var s = new AnyMoLeSession(transport);
            s.ConnectAsync().GetAwaiter().GetResult();
            return s;
        }

        static T Wait<T>(System.Threading.Tasks.Task<T> task) { return task.GetAwaiter().GetResult(); }

        /// <summary>The request the Python client built, as the core's own input.</summary>
        static FillRequest FromRecorded(pb.InbetweenRequest r)
        {
            int joints = r.Keyframes[0].Rotations.Count / 4;
            var req = new FillRequest
            {
                CharacterId = r.CharacterId, Context = ProtoConvert.FromProto(r.Context, joints), TotalFrames = (int)r.TotalFrames,
                Method = r.Method, Preset = r.Preset, ChunkFrames = (int)r.ChunkFrames, Seed = r.Seed, Label = r.Label,
            };
            foreach (var kv in r.ClientTags) req.ClientTags[kv.Key] = kv.Value;
            foreach (var k in r.Keyframes)
                req.Keyframes.Add(new Keyframe
                {
                    Frame = (int)k.Frame, Rotations = k.Rotations.ToArray(), RootTranslation = k.RootTranslation.ToArray(),
                    Translations = k.Translations.Count == 0 ? null : k.Translations.ToArray(),
                });
            return req;
        }

        /// <summary>The Python client leaves max_receive_message_bytes at 0, which the protocol reads as 4 MiB; the core
        /// says 4 MiB outright.</summary>
        static pb.InbetweenRequest WithDefaultLimit(pb.InbetweenRequest r)
        {
            var copy = r.Clone();
            if (copy.MaxReceiveMessageBytes == 0) copy.MaxReceiveMessageBytes = 4 << 20;
            return copy;
        }

        static T Sent<T>(ReplayTransport t, int call, MessageParser<T> parser) where T : IMessage<T>
        {
            return parser.ParseFrom(t.Sent[call].Value[0]);
        }

        [Test]
        public void Handshake()
        {
            ReplayTransport t;
            var s = Session(out t);
            Assert.AreEqual(1, s.Info.ProtocolMajor);
            Assert.AreEqual(2, s.Info.ProtocolMinor);
            Assert.IsTrue(s.Info.Methods.Any(m => m.Name == "interp" && m.Available));
            var mine = Sent(t, 0, pb.GetServerInfoRequest.Parser);
            var python = pb.GetServerInfoRequest.Parser.ParseFrom(Requests("handshake", 0)[0]);
            Assert.AreEqual(python.ClientProtocol, mine.ClientProtocol);
        }

        [Test]
        public void UploadNewThenCachedSendsWhatThePythonClientSent()
        {
            ReplayTransport t;
            var s = Session(out t, "upload_new", "upload_cached");
            var python = Requests("upload_new", 0).Select(m => pb.UploadCharacterRequest.Parser.ParseFrom(m)).ToList();
            var payload = python.Skip(1).SelectMany(m => m.Chunk.ToByteArray()).ToArray();
            var first = Wait(s.UploadAsync(payload, AssetFormat.Proto, python[0].Header.Name, python[1].Chunk.Length));
            Assert.IsFalse(first.Cached);
            Assert.AreEqual(python.Count - 1, first.ChunksSent);
            CollectionAssert.AreEqual(python, t.Sent[1].Value.Select(m => pb.UploadCharacterRequest.Parser.ParseFrom(m)).ToList());
            Assert.AreEqual(5, first.Skeleton.JointCount);
            var again = Wait(s.UploadAsync(payload, AssetFormat.Proto, python[0].Header.Name));
            Assert.IsTrue(again.Cached);
            Assert.AreEqual(first.CharacterId, again.CharacterId);
            var cachedPython = Requests("upload_cached", 0).Select(m => pb.UploadCharacterRequest.Parser.ParseFrom(m)).ToList();
            CollectionAssert.AreEqual(cachedPython, t.Sent[2].Value.Select(m => pb.UploadCharacterRequest.Parser.ParseFrom(m)).ToList());
        }

        [Test]
        public void InterpFillStreamsAndDownloadsTheSameFrames()
        {
            ReplayTransport t;
            var s = Session(out t, "interp_fill");
            var python = pb.InbetweenRequest.Parser.ParseFrom(Requests("interp_fill", 0)[0]);
            var request = FromRecorded(python);
            var events = new List<JobEvent>();
            Assert.IsInstanceOf<CompletedEvent>(Wait(s.InbetweenAsync(request, events.Add)));
            var mine = Sent(t, 1, pb.InbetweenRequest.Parser);
            Assert.AreEqual(WithDefaultLimit(python), mine, "the core's InbetweenRequest differs from the Python client's");
            Assert.AreEqual(events[0].JobId, s.JobId);
            Assert.IsTrue(s.Timeline.Complete);
            var result = Wait(s.DownloadResultAsync());
            Assert.AreEqual(s.JobId, Sent(t, 2, pb.DownloadResultRequest.Parser).JobId);
            Assert.AreEqual(21, result.FrameCount);
            CollectionAssert.AreEqual(result.Rotations, s.Timeline.Assemble(request.Context).Rotations);
            Assert.AreEqual(0, t.Remaining);
        }

        [Test]
        public void InvalidRequestNamesTheServersField()
        {
            ReplayTransport t;
            var s = Session(out t, "invalid_request");
            var python = pb.SubmitJobRequest.Parser.ParseFrom(Requests("invalid_request", 0)[0]);
            var exc = Assert.Throws<AnyMoLeRpcException>(() => Wait(s.SubmitAsync(FromRecorded(python.Request))));
            Assert.AreEqual(RpcCode.InvalidArgument, exc.Code);
            Assert.AreEqual("keyframes[1].frame", exc.Field);
            StringAssert.Contains("sort keyframes by frame", exc.Detail);
        }

        [Test]
        public void CancelEndsTheJobCancelled()
        {
            ReplayTransport t;
            var s = Session(out t, "cancel");
            var python = pb.SubmitJobRequest.Parser.ParseFrom(Requests("cancel", 0)[0]);
            Wait(s.SubmitAsync(FromRecorded(python.Request)));
            Assert.AreEqual(JobState.Cancelled, Wait(s.CancelAsync()));
            Assert.IsInstanceOf<CancelledEvent>(Wait(s.WatchAsync(null)));
            Assert.AreEqual(SessionState.Cancelled, s.State);
            Assert.AreEqual(WithDefaultLimit(python.Request), Sent(t, 1, pb.SubmitJobRequest.Parser).Request);
        }

        [Test]
        public void FailureMidStreamEndsFailedWithTheServersMessage()
        {
            ReplayTransport t;
            var s = Session(out t, "failure_mid_stream");
            var python = pb.InbetweenRequest.Parser.ParseFrom(Requests("failure_mid_stream", 0)[0]);
            var events = new List<JobEvent>();
            var end = (FailedEvent)Wait(s.InbetweenAsync(FromRecorded(python), events.Add));
            Assert.AreEqual(SessionState.Failed, s.State);
            Assert.That(events.Count, Is.GreaterThan(1), "the failure comes after other events");
            var recorded = pb.JobEvent.Parser.ParseFrom(Scenario("failure_mid_stream")[0].Key.Responses.Last()).Failed;
            Assert.AreEqual(recorded.Message, end.Message);
            Assert.AreEqual(recorded.Field, end.Field);
            Assert.AreEqual((RpcCode)recorded.Code, end.Code);
        }

        [Test]
        public void RewatchAfterReconnectResumesAfterTheLastEvent()
        {
            var calls = Scenario("rewatch_after_reconnect");
            var handshake = Scenario("handshake")[0].Key;
            var t = new ReplayTransport(new[] { handshake, calls[0].Key, handshake, calls[1].Key });
            var before = new AnyMoLeSession(t);
            Wait(before.ConnectAsync());
            var python = pb.InbetweenRequest.Parser.ParseFrom(calls[0].Value[0]);
            var stop = new CancellationTokenSource();
            int seen = 0;
            Assert.Throws<OperationCanceledException>(() =>
                Wait(before.InbetweenAsync(FromRecorded(python), ev => { if (++seen == 3) stop.Cancel(); }, stop.Token)));
            var saved = before.Snapshot().ToString();

            var after = new AnyMoLeSession(t);
            Wait(after.ConnectAsync());
            after.Reattach(SessionSnapshot.Parse(saved));
            var resumed = new List<JobEvent>();
            Assert.IsInstanceOf<CompletedEvent>(Wait(after.WatchAsync(resumed.Add)));
            var watch = Sent(t, 3, pb.WatchJobRequest.Parser);
            var pythonWatch = pb.WatchJobRequest.Parser.ParseFrom(calls[1].Value[0]);
            Assert.AreEqual(pythonWatch.JobId, watch.JobId);
            Assert.AreEqual(pythonWatch.AfterSeq, watch.AfterSeq);
            Assert.IsTrue(watch.SkipReplayedPreviews);
            Assert.AreEqual(watch.AfterSeq + 1, resumed[0].Seq);
        }

        [Test]
        public void AResultOverFourMebibytesArrivesFromItsParts()
        {
            ReplayTransport t;
            var s = Session(out t, "result_over_4mib");
            var python = pb.SubmitJobRequest.Parser.ParseFrom(Requests("result_over_4mib", 0)[0]);
            Wait(s.SubmitAsync(FromRecorded(python.Request)));
            var result = Wait(s.DownloadResultAsync());
            var header = pb.DownloadResultResponse.Parser.ParseFrom(Scenario("result_over_4mib")[1].Key.Responses[0]).Header;
            Assert.AreEqual((int)header.TotalFrames, result.FrameCount);
            Assert.AreEqual(65, result.JointCount);
            Assert.That(result.Rotations.Length * 4 + result.Translations.Length * 4, Is.GreaterThan(4 << 20));
            var pythonDownload = pb.DownloadResultRequest.Parser.ParseFrom(Requests("result_over_4mib", 1)[0]);
            Assert.AreEqual(pythonDownload.MaxReceiveMessageBytes, Sent(t, 2, pb.DownloadResultRequest.Parser).MaxReceiveMessageBytes);
            Assert.AreEqual(python.Request.MaxReceiveMessageBytes == 0 ? 4u << 20 : python.Request.MaxReceiveMessageBytes,
                            Sent(t, 1, pb.SubmitJobRequest.Parser).Request.MaxReceiveMessageBytes);
        }
    }
}
