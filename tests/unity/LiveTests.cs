// The core against a live server: scripts/unity_relay.py starts a real AnyMoLe server in-process (CPU worker,
// tiny video prior) and relays the core's serialised calls to it through grpcio, so every message here is
// built by the C# core and parsed from the server's own bytes.
using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Threading;
using System.Threading.Tasks;
using AnyMoLe.Core;
using AnyMoLe.Relay;
using Google.Protobuf;
using NUnit.Framework;
using pb = Anymole.V1;

namespace AnyMoLe.Tests
{
    [TestFixture]
    public class LiveTests
    {
        RelayTransport relay;
        AnyMoLeSession session;

        [TestFixtureSetUp]
        public void StartServer()
        {
            relay = RelayTransport.Launch(Paths.Repo, "--serve");
            session = new AnyMoLeSession(relay, null, "anymole-unity tests");
            Wait(session.ConnectAsync());
        }

        [TestFixtureTearDown]
        public void StopServer()
        {
            if (session != null) session.Dispose();
        }

        /// <summary>The task's result, or its own exception (not an AggregateException).</summary>
        static T Wait<T>(Task<T> task)
        {
            return task.GetAwaiter().GetResult();
        }

        /// <summary>A new session on its own relay to the same server (a second editor, or one after a reload).</summary>
        AnyMoLeSession SecondSession()
        {
            var s = new AnyMoLeSession(RelayTransport.Launch(Paths.Repo, "--target " + relay.Target));
            Wait(s.ConnectAsync());
            return s;
        }

        static Motion FoxSurvey()
        {
            var fox = Paths.ServerImport("Fox.glb");
            return Paths.FirstClip("Fox.glb", fox.Skeleton.JointCount);
        }

        /// <summary>Fox's Survey clip through Unity space and back (what the editor reads and sends), context
        /// clip frames [start, stop) and keys at the given clip frames.</summary>
        static FillRequest FoxRequest(string characterId, int start, int stop, int[] keys, string method = "interp")
        {
            var inUnity = UnitySpace.Convert(FoxSurvey());
            var motion = UnitySpace.Convert(inUnity);
            var req = new FillRequest { CharacterId = characterId, Context = motion.Slice(start, stop), Method = method, Label = "Fox:Survey" };
            foreach (var k in keys) req.Keyframes.Add(motion.KeyAt(k, k - start));
            return req;
        }

        UploadResult UploadFoxGlb()
        {
            var bytes = File.ReadAllBytes(Path.Combine(Paths.Repo, "assets/Fox.glb"));
            return Wait(session.UploadAsync(bytes, AssetFormat.Glb, "Fox"));
        }

        [Test]
        public void HandshakeReportsProtocolMethodsAndLimits()
        {
            var info = session.Info;
            Assert.AreEqual(AnyMoLeSession.ProtocolMajor, info.ProtocolMajor);
            var interp = info.Methods.Single(m => m.Name == "interp");
            Assert.IsTrue(interp.Available, interp.UnavailableReason);
            Assert.That(info.UploadChunkBytes, Is.GreaterThan(0));
            Assert.That(info.MaxJoints, Is.GreaterThan(0));
            CollectionAssert.Contains(info.Devices, "cpu");
            var video = info.Methods.Single(m => m.Name == "video");
            Assert.AreEqual(2f, video.MinContextSeconds);
            Assert.AreEqual(0f, video.KeySpacingSeconds);  // keys on any frames
            Assert.AreEqual(2f, video.MaxGapSeconds);
            Assert.IsFalse(video.ProducesMotion);
            Assert.IsTrue(interp.ProducesMotion);
            using (var fresh = SecondSession()) Assert.AreEqual(SessionState.Ready, fresh.State);
            Assert.IsNotEmpty(info.ServerVersion);
        }

        [Test]
        public void UploadSendsChunksOnceAndTheSecondUploadIsACacheHit()
        {
            var c = Paths.ServerImport("CesiumMan.glb");
            c.Name = "upload test " + Guid.NewGuid();  // a payload this server has never seen
            var payload = ProtoConvert.ToProto(c).ToByteArray();
            var first = Wait(session.UploadAsync(payload, AssetFormat.Proto, c.Name, 64 << 10, true));
            Assert.IsFalse(first.Cached);
            Assert.AreEqual((payload.Length + (64 << 10) - 1) / (64 << 10), first.ChunksSent);
            Assert.AreEqual("sha256:" + AnyMoLeSession.Sha256Hex(payload), first.CharacterId);
            Assert.AreEqual(c.Mesh.VertexCount, first.VertexCount);
            CollectionAssert.AreEqual(c.Skeleton.Names, first.Skeleton.Names);
            var second = Wait(session.UploadAsync(payload, AssetFormat.Proto, c.Name, 64 << 10, true));
            Assert.IsTrue(second.Cached);
            Assert.AreEqual(first.CharacterId, second.CharacterId);
            Assert.AreEqual(0, second.ChunksSent);  // known to this session: the header alone
        }

        [Test]
        public void ACharacterTheServerHoldsIsNotUploadedAgainByANewSession()
        {
            var c = Paths.ServerImport("Fox.glb");
            c.Name = "held " + Guid.NewGuid();
            Assert.IsNull(Wait(session.GetCharacterAsync("sha256:" + AnyMoLeSession.Sha256Hex(ProtoConvert.ToProto(c).ToByteArray()))));
            var first = Wait(session.UploadCharacterAsync(c));
            Assert.IsFalse(first.Cached);
            Assert.That(first.ChunksSent, Is.GreaterThan(0));
            using (var reloaded = SecondSession())  // a new domain: nothing remembered
            {
                var again = Wait(reloaded.UploadCharacterAsync(c));
                Assert.IsTrue(again.Cached);
                Assert.AreEqual(0, again.ChunksSent);
                Assert.AreEqual(first.CharacterId, again.CharacterId);
                CollectionAssert.AreEqual(first.Skeleton.Names, again.Skeleton.Names);
                Assert.AreEqual(c.Mesh.VertexCount, again.VertexCount);
            }
        }

        [Test]
        public void EveryBundledCharacterThroughUnitySpaceUploadsAsTheServersOwnImport()
        {
            // The server's import of each file, mapped to what Unity holds (under a renderer placed off the
            // root) and back by the package's code, then uploaded as PROTO: the server reads the same skeleton
            // and mesh size, and the payload equals the server's own import up to float rounding.
            var placement = Mat4.FromTR(new[] { 0.1f, -0.2f, 0.3f }, 0, new[] { 0f, 0.38268343f, 0f, 0.92387953f }, 0);
            foreach (var name in Paths.BundledCharacters)
            {
                var imported = Paths.ServerImport(name);
                var unitySkeleton = UnitySpace.Convert(imported.Skeleton);
                var unityMesh = imported.Mesh == null ? null : UnitySpace.ToUnity(imported.Mesh, placement);
                var back = UnitySpace.ToCanonical(imported.Name + " (unity)", unitySkeleton, unityMesh);
                CollectionAssert.AreEqual(imported.Skeleton.RestRotations, back.Skeleton.RestRotations, name);
                CollectionAssert.AreEqual(imported.Skeleton.RestTranslations, back.Skeleton.RestTranslations, name);
                if (imported.Mesh != null)
                {
                    ConversionTests.AssertClose(imported.Mesh.Positions, back.Mesh.Positions, 2e-5, name + " positions");
                    ConversionTests.AssertClose(imported.Mesh.Normals, back.Mesh.Normals, 2e-5, name + " normals");
                    ConversionTests.AssertClose(imported.Mesh.Uvs, back.Mesh.Uvs, 1e-6, name + " uvs");
                    ConversionTests.AssertClose(imported.Mesh.InverseBindMatrices, back.Mesh.InverseBindMatrices, 1e-4, name + " inverse binds");
                    CollectionAssert.AreEqual(imported.Mesh.Triangles, back.Mesh.Triangles, name);
                    CollectionAssert.AreEqual(imported.Mesh.JointIndices, back.Mesh.JointIndices, name);
                    CollectionAssert.AreEqual(imported.Mesh.Colors, back.Mesh.Colors, name);
                    CollectionAssert.AreEqual(imported.Mesh.TriangleMaterials, back.Mesh.TriangleMaterials, name);
                    Assert.AreEqual(imported.Mesh.Materials.Count, back.Mesh.Materials.Count, name);
                    Assert.AreEqual(imported.Mesh.Textures.Count, back.Mesh.Textures.Count, name);
                }
                var up = Wait(session.UploadCharacterAsync(back));
                CollectionAssert.AreEqual(imported.Skeleton.Names, up.Skeleton.Names, name);
                CollectionAssert.AreEqual(imported.Skeleton.Parents, up.Skeleton.Parents, name);
                CollectionAssert.AreEqual(imported.Skeleton.RestRotations, up.Skeleton.RestRotations, name);
                Assert.AreEqual(imported.Mesh == null ? 0 : imported.Mesh.VertexCount, up.VertexCount, name);
                // With the renderer at the root the mesh maps without arithmetic: the same bytes, the same id.
                var exact = UnitySpace.ToCanonical(imported.Name, unitySkeleton,
                    imported.Mesh == null ? null : UnitySpace.ToUnity(imported.Mesh));
                if (imported.Mesh != null) exact.Mesh.Uvs = imported.Mesh.Uvs;  // 1 - (1 - v) rounds
                var fixture = File.ReadAllBytes(Path.Combine(Paths.Fixtures, "characters", name + ".asset.bin"));
                Assert.IsTrue(fixture.SequenceEqual(ProtoConvert.ToProto(exact).ToByteArray()), name + ": payload differs from the server's import");
            }
        }

        [Test]
        public void EveryBundledCharacterAndClipRoundTripsFromUnitySpace()
        {
            // Unity → canonical → Unity: the mesh under a renderer placed off the root, the skeleton and the first
            // clip; the mirror is exact, the renderer's matrix leaves float rounding.
            var placement = Mat4.FromTR(new[] { -0.4f, 0.05f, 1.2f }, 0, new[] { 0.2588190f, 0f, 0f, 0.9659258f }, 0);
            foreach (var name in Paths.BundledCharacters)
            {
                var imported = Paths.ServerImport(name);
                var skeleton = UnitySpace.Convert(imported.Skeleton);
                var clip = UnitySpace.Convert(Paths.FirstClip(name, skeleton.JointCount));
                var back = UnitySpace.Convert(UnitySpace.Convert(clip));
                CollectionAssert.AreEqual(clip.Rotations, back.Rotations, name);
                CollectionAssert.AreEqual(clip.RootTranslations, back.RootTranslations, name);
                if (imported.Mesh == null) continue;
                var unity = UnitySpace.ToUnity(imported.Mesh, placement);
                var again = UnitySpace.ToUnity(UnitySpace.ToCanonical(name, skeleton, unity).Mesh, placement);
                ConversionTests.AssertClose(unity.Vertices, again.Vertices, 2e-5, name + " vertices");
                ConversionTests.AssertClose(unity.Normals, again.Normals, 2e-5, name + " normals");
                ConversionTests.AssertClose(unity.Uv, again.Uv, 1e-6, name + " uv");
                ConversionTests.AssertClose(unity.Bindposes, again.Bindposes, 1e-4, name + " bind poses");
                CollectionAssert.AreEqual(unity.Triangles, again.Triangles, name);
                CollectionAssert.AreEqual(unity.BoneIndices, again.BoneIndices, name);
            }
        }

        [Test]
        public void InterpFillEqualsThePythonClientsBitForBit()
        {
            var up = UploadFoxGlb();
            Assert.AreEqual(File.ReadAllText(Path.Combine(Paths.Fixtures, "fox_interp_python.id")), up.CharacterId);
            var events = new List<JobEvent>();
            var end = Wait(session.FillAsync(FoxRequest(up.CharacterId, 0, 40, new[] { 60, 82 }), events.Add));
            Assert.IsInstanceOf<CompletedEvent>(end, end.ToString());
            Assert.AreEqual(SessionState.Completed, session.State);
            Assert.IsTrue(session.Timeline.Complete);
            CollectionAssert.AreEqual(Enumerable.Range(1, events.Count).Select(i => (ulong)i).ToArray(), events.Select(e => e.Seq).ToArray());
            var python = ProtoConvert.FromProto(pb.Clip.Parser.ParseFrom(
                File.ReadAllBytes(Path.Combine(Paths.Fixtures, "fox_interp_python.clip.bin"))), 0);
            var downloaded = Wait(session.DownloadResultAsync());
            Assert.AreEqual(83, downloaded.FrameCount);
            CollectionAssert.AreEqual(python.Rotations, downloaded.Rotations);
            CollectionAssert.AreEqual(python.RootTranslations, downloaded.RootTranslations);
            // The streamed frames put after the context are the result too.
            var streamed = session.Timeline.Assemble(FoxRequest(up.CharacterId, 0, 40, new[] { 60, 82 }).Context);
            CollectionAssert.AreEqual(python.Rotations, streamed.Rotations);
            CollectionAssert.AreEqual(python.RootTranslations, streamed.RootTranslations);
        }

        [Test]
        public void BadInputFailsWithTheFieldTheServerNames()
        {
            var up = UploadFoxGlb();
            var req = FoxRequest(up.CharacterId, 0, 40, new[] { 60 });
            req.Keyframes[0].Rotations[5] = float.NaN;
            var exc = Assert.Throws<AnyMoLeRpcException>(() => Wait(session.SubmitAsync(req)));
            Assert.AreEqual(RpcCode.InvalidArgument, exc.Code);
            StringAssert.StartsWith("keyframes[0].rotations", exc.Field);
            StringAssert.Contains(exc.Field, exc.Message);
        }

        [Test]
        public void CancelStopsARunningJobWithACancelledEvent()
        {
            // The video method adapts the tiny prior for 200 steps: cancelled at its first step, it ends early.
            var up = UploadFoxGlb();
            var s = SecondSession();
            try
            {
                Wait(s.UploadAsync(File.ReadAllBytes(Path.Combine(Paths.Repo, "assets/Fox.glb")), AssetFormat.Glb, "Fox"));
                var req = FoxRequest(up.CharacterId, 0, 49, new[] { 72 }, "video");
                req.Preset = "fast";
                Wait(s.SubmitAsync(req));
                var stages = new List<ProgressEvent>();
                Task<JobState> cancel = null;
                var end = Wait(s.WatchAsync(ev =>
                {
                    var p = ev as ProgressEvent;
                    if (p == null) return;
                    stages.Add(p);
                    if (cancel == null && p.Stage == "icadapt" && p.StageFraction > 0) cancel = s.CancelAsync();
                }));
                Assert.IsNotNull(cancel, "no icadapt progress arrived");
                Assert.IsInstanceOf<CancelledEvent>(end);
                Assert.AreEqual(SessionState.Cancelled, s.State);
                Assert.That(Wait(cancel), Is.EqualTo(JobState.Running).Or.EqualTo(JobState.Cancelled));
                Assert.That(stages.Where(p => p.Stage == "icadapt").Max(p => p.StageFraction), Is.LessThanOrEqualTo(5f / 200));
                Assert.IsFalse(stages.Any(p => p.Stage == "sample"));
            }
            finally
            {
                s.Dispose();
            }
        }

        [Test]
        public void ASessionAfterADomainReloadReattachesAndResumesAfterTheLastEvent()
        {
            var up = UploadFoxGlb();
            var req = FoxRequest(up.CharacterId, 0, 40, new[] { 60, 82 });
            req.ClientTags["asset"] = "Assets/Fox.anim";
            req.ClientTags["editor_session"] = Guid.NewGuid().ToString();
            req.ChunkFrames = 5;  // several motion events
            Wait(session.SubmitAsync(req));
            // Watch until the first motion event, then drop the stream as a domain reload would.
            var stop = new CancellationTokenSource();
            var seen = new List<JobEvent>();
            try
            {
                Wait(session.WatchAsync(ev =>
                {
                    seen.Add(ev);
                    if (ev is MotionEvent) stop.Cancel();
                }, stop.Token));
            }
            catch (OperationCanceledException)
            {
            }
            catch (AnyMoLeRpcException exc)
            {
                Assert.AreEqual(RpcCode.Cancelled, exc.Code, exc.Message);
            }
            var saved = session.Snapshot().ToString();  // what SessionState keeps across the reload
            Assert.AreEqual(seen.Last().Seq, session.LastSeq);

            var after = SecondSession();
            try
            {
                var found = Wait(after.FindJobAsync(new Dictionary<string, string> { { "editor_session", req.ClientTags["editor_session"] } }));
                Assert.IsNotNull(found, "ListJobs does not show the job by its tag");
                var snapshot = SessionSnapshot.Parse(saved);
                Assert.AreEqual(snapshot.JobId, found.JobId);
                CollectionAssert.AreEquivalent(req.ClientTags, found.ClientTags);
                CollectionAssert.AreEquivalent(req.ClientTags, snapshot.Tags);
                after.Reattach(snapshot);
                var resumed = new List<JobEvent>();
                var end = Wait(after.WatchAsync(resumed.Add));
                Assert.IsInstanceOf<CompletedEvent>(end);
                Assert.AreEqual(snapshot.LastSeq + 1, resumed[0].Seq, "the replay must start right after the last event seen");
                CollectionAssert.AreEqual(Enumerable.Range(1, seen.Count + resumed.Count).Select(i => (ulong)i).ToArray(),
                    seen.Concat(resumed).Select(e => e.Seq).ToArray());
                var python = ProtoConvert.FromProto(pb.Clip.Parser.ParseFrom(
                    File.ReadAllBytes(Path.Combine(Paths.Fixtures, "fox_interp_python.clip.bin"))), 0);
                CollectionAssert.AreEqual(python.Rotations, Wait(after.DownloadResultAsync()).Rotations);
            }
            finally
            {
                after.Dispose();
            }
        }

        /// <summary>A chain skeleton of <paramref name="joints"/> joints 10 cm apart, no mesh.</summary>
        static Character Chain(int joints)
        {
            var s = new Skeleton
            {
                Names = new string[joints], Parents = new int[joints],
                RestTranslations = new float[joints * 3], RestRotations = new float[joints * 4],
            };
            for (int j = 0; j < joints; j++)
            {
                s.Names[j] = "bone" + j;
                s.Parents[j] = j - 1;
                s.RestTranslations[j * 3 + 1] = j == 0 ? 0 : 0.1f;
                s.RestRotations[j * 4 + 3] = 1;
            }
            return new Character { Name = "chain " + Guid.NewGuid(), Skeleton = s };
        }

        [Test]
        public void AResultOverFourMebibytesArrivesInPartsUnderGrpcDotnetsReceiveLimit()
        {
            // 100 joints × 3001 frames of rotations are 4.8 MB: no one message may carry them through the
            // relay's 4 MiB receive limit, so the events and the download must come in parts.
            const int joints = 100, last = 3000;
            var up = Wait(session.UploadCharacterAsync(Chain(joints)));
            var context = new Motion { Fps = 30, FrameCount = 2, JointCount = joints, Rotations = new float[2 * joints * 4], RootTranslations = new float[6] };
            for (int i = 0; i < 2 * joints; i++) context.Rotations[i * 4 + 3] = 1;
            var key = new Keyframe { Frame = last, Rotations = new float[joints * 4], RootTranslation = new[] { 1f, 0f, 0f } };
            for (int j = 0; j < joints; j++) { key.Rotations[j * 4 + 1] = 0.38268343f; key.Rotations[j * 4 + 3] = 0.92387953f; }
            var req = new FillRequest { CharacterId = up.CharacterId, Context = context, Method = "interp" };
            req.Keyframes.Add(key);
            int motionEvents = 0;
            var end = Wait(session.FillAsync(req, ev => { if (ev is MotionEvent) motionEvents++; }));
            Assert.IsInstanceOf<CompletedEvent>(end, end.ToString());
            Assert.That(motionEvents, Is.GreaterThan(1));
            var result = Wait(session.DownloadResultAsync());
            Assert.AreEqual(last + 1, result.FrameCount);
            Assert.That(result.Rotations.Length * 4, Is.GreaterThan(4 << 20));
            CollectionAssert.AreEqual(key.Rotations, Motion.Sub(result.Rotations, last * joints * 4, joints * 4));
            CollectionAssert.AreEqual(result.Rotations, session.Timeline.Assemble(context).Rotations);
        }

        /// <summary>Runs build/unity/AnyMoLeFill.exe under mono: (exit status, stderr).</summary>
        static KeyValuePair<int, string> RunExample(string arguments)
        {
            var psi = new System.Diagnostics.ProcessStartInfo("mono", Path.Combine(Paths.Build, "AnyMoLeFill.exe") + " " + arguments)
            {
                UseShellExecute = false, RedirectStandardError = true, RedirectStandardOutput = true, WorkingDirectory = Paths.Repo,
            };
            using (var p = System.Diagnostics.Process.Start(psi))
            {
                var stderr = p.StandardError.ReadToEndAsync();
                p.StandardOutput.ReadToEnd();
                p.WaitForExit();
                return new KeyValuePair<int, string>(p.ExitCode, stderr.Result);
            }
        }

        [Test]
        public void CommandLineExampleFillsAFileAsThePythonClientDoes()
        {
            var output = Path.Combine(Paths.Build, "fox_interp_csharp.json");
            var run = RunExample("--server " + relay.Target + " assets/Fox.glb --motion " + Path.Combine(Paths.Fixtures, "fox_survey.clip.json") +
                                 " --context 0:40 --keys 60,82 --method interp --out " + output);
            Assert.AreEqual(0, run.Key, run.Value);
            // The same document as `anymole fill --server ... --out result.json` writes for this fill.
            var serializer = new System.Web.Script.Serialization.JavaScriptSerializer { MaxJsonLength = int.MaxValue };
            var mine = serializer.Deserialize<Dictionary<string, object>>(File.ReadAllText(output));
            var python = serializer.Deserialize<Dictionary<string, object>>(File.ReadAllText(Path.Combine(Paths.Fixtures, "fox_fill_python.json")));
            CollectionAssert.AreEquivalent(python.Keys, mine.Keys);
            Assert.AreEqual(python["format"], mine["format"]);
            Assert.AreEqual(Convert.ToDouble(python["fps"]), Convert.ToDouble(mine["fps"]));
            CollectionAssert.AreEqual((System.Collections.ArrayList)python["joint_names"], (System.Collections.ArrayList)mine["joint_names"]);
            foreach (var key in new[] { "rotations", "root_translations" })
                CollectionAssert.AreEqual(Floats(python[key]), Floats(mine[key]), key);
            var clip = ProtoConvert.FromProto(pb.Clip.Parser.ParseFrom(
                File.ReadAllBytes(Path.Combine(Paths.Fixtures, "fox_interp_python.clip.bin"))), 0);
            CollectionAssert.AreEqual(clip.Rotations, Floats(mine["rotations"]));
        }

        static float[] Floats(object nested)
        {
            var list = nested as System.Collections.ArrayList;
            return list == null ? new[] { (float)Convert.ToDouble(nested) } : list.Cast<object>().SelectMany(Floats).ToArray();
        }

        [Test]
        public void CommandLineExampleRefusesBadKeysWithOneMessage()
        {
            var run = RunExample("--server " + relay.Target + " assets/Fox.glb --motion " + Path.Combine(Paths.Fixtures, "fox_survey.clip.json") +
                                 " --context 0:40 --keys 30 --out " + Path.Combine(Paths.Build, "never.json"));
            Assert.AreEqual(1, run.Key);
            StringAssert.StartsWith("error: --keys: give increasing clip frames in 40..82", run.Value);
            Assert.AreEqual(1, run.Value.Trim().Split('\n').Length, run.Value);
        }

        [Test]
        public void InbetweenStreamsTheSameFillAsSubmitAndWatch()
        {
            var up = UploadFoxGlb();
            var events = new List<JobEvent>();
            var end = Wait(session.InbetweenAsync(FoxRequest(up.CharacterId, 0, 40, new[] { 60, 82 }), events.Add));
            Assert.IsInstanceOf<CompletedEvent>(end);
            Assert.AreEqual(events[0].JobId, session.JobId);
            var python = ProtoConvert.FromProto(pb.Clip.Parser.ParseFrom(
                File.ReadAllBytes(Path.Combine(Paths.Fixtures, "fox_interp_python.clip.bin"))), 0);
            CollectionAssert.AreEqual(python.Rotations, Wait(session.DownloadResultAsync()).Rotations);
        }
    }
}
