// A command-line fill built with the package's core, for checking the core on any file outside Unity:
//
//   mono AnyMoLeFill.exe --server HOST:PORT CHARACTER_FILE --motion clip.json --context A:B --keys i,j
//                        [--method interp] [--preset P] [--token T] --out result.json
//
// It uploads the character file (.glb, .fbx or .bvh), reads the clip (motion JSON "anymole.motion.v1", as
// `anymole convert --out clip.json` writes it: fps, joint_names, rotations F×J×4, root_translations F×3,
// optional translations F×J×3, canonical space), takes it to Unity space and back
// through AnyMoLe.Core.UnitySpace as the editor does, fills the gap after clip frames A..B-1 up to the keys, and
// writes the result timeline (clip frames A..last key) in the same JSON format as `anymole fill --out
// result.json`. No C# gRPC runtime is needed: it reaches the server through scripts/unity_relay.py
// (ANYMOLE_PYTHON and ANYMOLE_RELAY say which Python and relay; default python3 and scripts/unity_relay.py).
// Exit status 0 on success, 1 with one message on any error.
using System;
using System.Collections;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Text;
using System.Web.Script.Serialization;
using AnyMoLe.Core;
using AnyMoLe.Relay;

namespace AnyMoLe.Samples
{
    public static class AnyMoLeFill
    {
        sealed class UsageError : Exception
        {
            public UsageError(string message) : base(message) { }
        }

        public static int Main(string[] args)
        {
            try
            {
                Run(args);
                return 0;
            }
            catch (UsageError exc)
            {
                Console.Error.WriteLine("error: " + exc.Message);
            }
            catch (AnyMoLeRpcException exc)
            {
                Console.Error.WriteLine("error: the server answered " + exc.Message);
            }
            catch (IOException exc)
            {
                Console.Error.WriteLine("error: " + exc.Message);
            }
            return 1;
        }

        static void Run(string[] args)
        {
            var opts = new Dictionary<string, string> { { "--method", "interp" }, { "--preset", "" }, { "--token", "" } };
            string character = null;
            for (int i = 0; i < args.Length; i++)
            {
                if (args[i].StartsWith("--"))
                {
                    if (i + 1 >= args.Length) throw new UsageError(args[i] + " needs a value");
                    opts[args[i]] = args[++i];
                }
                else if (character == null) character = args[i];
                else throw new UsageError("one CHARACTER_FILE only, got '" + character + "' and '" + args[i] + "'");
            }
            foreach (var needed in new[] { "--server", "--motion", "--context", "--keys", "--out" })
                if (!opts.ContainsKey(needed)) throw new UsageError(needed + " is missing (usage: see the top of AnyMoLeFill.cs)");
            if (character == null) throw new UsageError("give the CHARACTER_FILE to upload");
            var format = FormatOf(character);

            var clip = ReadClip(opts["--motion"]);
            var range = opts["--context"].Split(':');
            int start, stop;
            if (range.Length != 2 || !int.TryParse(range[0], out start) || !int.TryParse(range[1], out stop) || start < 0 || stop <= start || stop > clip.Motion.FrameCount)
                throw new UsageError("--context: '" + opts["--context"] + "' is not a range A:B of the clip's " + clip.Motion.FrameCount + " frames");
            int[] keys;
            try
            {
                keys = opts["--keys"].Split(',').Select(k => int.Parse(k.Trim(), CultureInfo.InvariantCulture)).ToArray();
            }
            catch (FormatException)
            {
                throw new UsageError("--keys: give clip frames separated by commas, e.g. 60,82");
            }
            if (keys.Any(k => k < stop || k >= clip.Motion.FrameCount) || !keys.SequenceEqual(keys.Distinct().OrderBy(k => k)))
                throw new UsageError("--keys: give increasing clip frames in " + stop + ".." + (clip.Motion.FrameCount - 1) + " (after the context)");

            // The editor's path: what Unity holds is the clip in Unity space; the core maps it back for the wire.
            var motion = UnitySpace.Convert(UnitySpace.Convert(clip.Motion));
            var python = Environment.GetEnvironmentVariable("ANYMOLE_PYTHON") ?? "python3";
            var relay = Environment.GetEnvironmentVariable("ANYMOLE_RELAY") ?? "scripts/unity_relay.py";
            using (var session = new AnyMoLeSession(new RelayTransport(python, relay, "--target " + opts["--server"]),
                                                    opts["--token"], "anymole-unity AnyMoLeFill"))
            {
                session.ConnectAsync().GetAwaiter().GetResult();
                var up = session.UploadAsync(File.ReadAllBytes(character), format, Path.GetFileNameWithoutExtension(character), 0, true).GetAwaiter().GetResult();
                if (clip.JointNames != null && !clip.JointNames.SequenceEqual(up.Skeleton.Names))
                    throw new UsageError(opts["--motion"] + " names other joints (or another order) than the server reads from " + character);
                var request = new FillRequest
                {
                    CharacterId = up.CharacterId, Context = motion.Slice(start, stop), Method = opts["--method"],
                    Preset = opts["--preset"], Label = Path.GetFileName(character),
                };
                foreach (var k in keys) request.Keyframes.Add(motion.KeyAt(k, k - start));
                var end = session.FillAsync(request, ev =>
                {
                    var p = ev as ProgressEvent;
                    if (p != null) Console.Error.WriteLine(string.Format(CultureInfo.InvariantCulture, "{0,-10} {1,5:P0}", p.Stage, p.Fraction));
                }).GetAwaiter().GetResult();
                var failed = end as FailedEvent;
                if (failed != null) throw new UsageError("job " + session.JobId + " failed" + (failed.Field.Length > 0 ? " [" + failed.Field + "]" : "") + ": " + failed.Message);
                if (!(end is CompletedEvent)) throw new UsageError("job " + session.JobId + " ended as " + session.State);
                var result = session.DownloadResultAsync().GetAwaiter().GetResult();
                WriteClip(opts["--out"], result, up.Skeleton.Names);
                Console.Error.WriteLine("wrote " + opts["--out"] + " (job " + session.JobId + ")");
            }
        }

        static AssetFormat FormatOf(string path)
        {
            switch (Path.GetExtension(path).ToLowerInvariant())
            {
                case ".glb": return AssetFormat.Glb;
                case ".fbx": return AssetFormat.Fbx;
                case ".bvh": return AssetFormat.Bvh;
                default: throw new UsageError("cannot upload '" + path + "': use a .glb, .fbx or .bvh file");
            }
        }

        const string Format = "anymole.motion.v1";

        sealed class JsonClip
        {
            public Motion Motion;
            public string[] JointNames;
        }

        static JsonClip ReadClip(string path)
        {
            Dictionary<string, object> root;
            try
            {
                root = new JavaScriptSerializer { MaxJsonLength = int.MaxValue }.Deserialize<Dictionary<string, object>>(File.ReadAllText(path));
            }
            catch (ArgumentException exc)
            {
                throw new UsageError(path + " is not JSON: " + exc.Message);
            }
            object value;
            if (!root.TryGetValue("format", out value) || (value as string) != Format)
                throw new UsageError(path + ": 'format' must be \"" + Format + "\" (motion JSON, as anymole convert --out clip.json writes)");
            if (!root.TryGetValue("rotations", out value)) throw new UsageError(path + " has no 'rotations' (F × J × 4)");
            var rotations = (ArrayList)value;
            int f = rotations.Count, j = f == 0 ? 0 : ((ArrayList)rotations[0]).Count;
            var m = new Motion
            {
                Fps = root.ContainsKey("fps") ? (float)Convert.ToDouble(root["fps"], CultureInfo.InvariantCulture) : 30f,
                FrameCount = f, JointCount = j,
                Rotations = Flat(rotations, f * j * 4, path, "rotations"),
                RootTranslations = Flat((ArrayList)root["root_translations"], f * 3, path, "root_translations"),
            };
            if (root.TryGetValue("translations", out value) && value != null)
                m.Translations = Flat((ArrayList)value, f * j * 3, path, "translations");
            string[] names = null;
            if (root.TryGetValue("joint_names", out value))
                names = ((ArrayList)value).Cast<object>().Select(o => (string)o).ToArray();
            return new JsonClip { Motion = m, JointNames = names };
        }

        static float[] Flat(ArrayList nested, int count, string path, string field)
        {
            var r = new List<float>(count);
            Action<object> walk = null;
            walk = o =>
            {
                var list = o as ArrayList;
                if (list != null) foreach (var x in list) walk(x);
                else r.Add((float)Convert.ToDouble(o, CultureInfo.InvariantCulture));
            };
            walk(nested);
            if (r.Count != count) throw new UsageError(path + ": '" + field + "' holds " + r.Count + " numbers, expected " + count);
            return r.ToArray();
        }

        static void WriteClip(string path, Motion m, string[] names)
        {
            var sb = new StringBuilder();
            sb.Append("{\"format\": \"").Append(Format).Append("\", \"fps\": ").Append(((double)m.Fps).ToString("R", CultureInfo.InvariantCulture));
            sb.Append(", \"joint_names\": [").Append(string.Join(", ", names.Select(n => new JavaScriptSerializer().Serialize(n)).ToArray())).Append("]");
            sb.Append(", \"rotations\": ");
            Nested(sb, m.Rotations, m.FrameCount, m.JointCount, 4, true);
            sb.Append(", \"root_translations\": ");
            Nested(sb, m.RootTranslations, m.FrameCount, 1, 3, false);
            if (m.Translations != null)
            {
                sb.Append(", \"translations\": ");
                Nested(sb, m.Translations, m.FrameCount, m.JointCount, 3, true);
            }
            sb.Append("}\n");
            File.WriteAllText(path, sb.ToString());
        }

        /// <summary>frames × joints × width floats as nested lists (frames × width when not per joint).</summary>
        static void Nested(StringBuilder sb, float[] a, int frames, int joints, int width, bool perJoint)
        {
            sb.Append('[');
            for (int f = 0; f < frames; f++)
            {
                if (f > 0) sb.Append(", ");
                if (!perJoint) Row(sb, a, f * width, width);
                else
                {
                    sb.Append('[');
                    for (int j = 0; j < joints; j++)
                    {
                        if (j > 0) sb.Append(", ");
                        Row(sb, a, (f * joints + j) * width, width);
                    }
                    sb.Append(']');
                }
            }
            sb.Append(']');
        }

        static void Row(StringBuilder sb, float[] a, int o, int n)
        {
            sb.Append('[');
            for (int i = 0; i < n; i++)
            {
                if (i > 0) sb.Append(", ");
                sb.Append(a[o + i].ToString("R", CultureInfo.InvariantCulture));
            }
            sb.Append(']');
        }
    }
}
