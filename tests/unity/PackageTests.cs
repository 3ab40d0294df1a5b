// The UPM package as files: every asset and folder has a committed .meta with a GUID no other has, and the
// committed generated messages are what protoc makes of proto/anymole/v1 today.
using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text.RegularExpressions;
using NUnit.Framework;

namespace AnyMoLe.Tests
{
    [TestFixture]
    public class PackageTests
    {
        static string Package { get { return Path.Combine(Paths.Repo, "unity_plugin"); } }

        /// <summary>What Unity imports: everything except .meta files, hidden entries and folders ending in ~.</summary>
        static IEnumerable<string> Assets(string dir)
        {
            foreach (var entry in Directory.GetFileSystemEntries(dir).OrderBy(e => e, StringComparer.Ordinal))
            {
                var name = Path.GetFileName(entry);
                if (name.StartsWith(".") || name.EndsWith("~") || name.EndsWith(".meta")) continue;
                yield return entry;
                if (Directory.Exists(entry))
                    foreach (var inner in Assets(entry)) yield return inner;
            }
        }

        [Test]
        public void EveryAssetHasAMetaWithAUniqueGuidAndNoMetaIsOrphaned()
        {
            var guids = new Dictionary<string, string>();
            var problems = new List<string>();
            var guidLine = new Regex(@"^guid: ([0-9a-f]{32})\s*$", RegexOptions.Multiline);
            foreach (var asset in Assets(Package))
            {
                var meta = asset + ".meta";
                if (!File.Exists(meta)) { problems.Add("no .meta: " + asset); continue; }
                var m = guidLine.Match(File.ReadAllText(meta));
                if (!m.Success) { problems.Add("no 32-hex guid in " + meta); continue; }
                string other;
                if (guids.TryGetValue(m.Groups[1].Value, out other)) problems.Add("guid of " + meta + " repeats " + other);
                else guids[m.Groups[1].Value] = meta;
                bool folder = Directory.Exists(asset);
                if (folder != File.ReadAllText(meta).Contains("folderAsset: yes"))
                    problems.Add(meta + (folder ? " lacks" : " has") + " folderAsset: yes");
            }
            foreach (var meta in Directory.GetFiles(Package, "*.meta", SearchOption.AllDirectories))
            {
                var target = meta.Substring(0, meta.Length - 5);
                if (!File.Exists(target) && !Directory.Exists(target)) problems.Add("orphaned " + meta);
            }
            Assert.That(guids.Count, Is.GreaterThan(10));
            Assert.IsEmpty(problems, string.Join("\n", problems.ToArray()));
        }

        [Test]
        public void PackageManifestNamesAReverseDnsPackageForUnity2022_3()
        {
            var json = File.ReadAllText(Path.Combine(Package, "package.json"));
            StringAssert.IsMatch("\"name\": \"com\\.[a-z0-9-]+\\.[a-z0-9.-]+\"", json);
            StringAssert.IsMatch("\"version\": \"[0-9]+\\.[0-9]+\\.[0-9]+\"", json);
            StringAssert.Contains("\"unity\": \"2022.3\"", json);
            var core = File.ReadAllText(Path.Combine(Package, "Runtime/Core/AnyMoLe.Core.asmdef"));
            StringAssert.IsMatch("\"noEngineReferences\": true", core);
        }

        [Test]
        public void CommittedMessagesAreWhatProtocGeneratesFromTheProto()
        {
            var committed = File.ReadAllText(Path.Combine(Package, "Runtime/Core/Generated/Anymole.cs"));
            var fresh = File.ReadAllText(Path.Combine(Paths.Build, "gen/Anymole.cs"));
            Assert.IsTrue(committed == fresh,
                "unity_plugin/Runtime/Core/Generated/Anymole.cs is stale: run protoc -Iproto --csharp_out=" +
                "unity_plugin/Runtime/Core/Generated proto/anymole/v1/anymole.proto");
        }
    }
}
