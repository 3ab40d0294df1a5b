// Where scripts/test_unity.sh put things: the repository, the build folder and the Python-side fixtures.
using System;
using System.IO;
using AnyMoLe.Core;
using Google.Protobuf;
using pb = Anymole.V1;

namespace AnyMoLe.Tests
{
    static class Paths
    {
        public static string Repo { get { return Env("ANYMOLE_REPO"); } }
        public static string Build { get { return Env("ANYMOLE_UNITY_BUILD"); } }
        public static string Fixtures { get { return Path.Combine(Build, "fixtures"); } }
        public static readonly string[] BundledCharacters = { "CesiumMan.glb", "Fox.glb", "Fox.fbx", "131_01.bvh", "131_01_30fps.bvh" };

        static string Env(string name)
        {
            var v = Environment.GetEnvironmentVariable(name);
            if (string.IsNullOrEmpty(v)) throw new InvalidOperationException(name + " is unset: run bash scripts/test_unity.sh");
            return v;
        }

        /// <summary>The server's own import of a bundled file, as a canonical character.</summary>
        public static Character ServerImport(string name)
        {
            var raw = File.ReadAllBytes(Path.Combine(Fixtures, "characters", name + ".asset.bin"));
            return ProtoConvert.FromProto(pb.CharacterAsset.Parser.ParseFrom(raw));
        }

        /// <summary>The first clip of a bundled file as the server imports it.</summary>
        public static Motion FirstClip(string name, int joints)
        {
            var raw = File.ReadAllBytes(Path.Combine(Fixtures, "characters", name + ".clip.bin"));
            return ProtoConvert.FromProto(pb.Clip.Parser.ParseFrom(raw), joints);
        }
    }
}
