// The engine-free client core: plain C++17, no engine types (it is built and tested outside Unreal too, with
// unreal_plugin/CMakeLists.txt). The protobuf / gRPC stubs are generated here at build time from
// anymole.proto with the protoc and grpc_cpp_plugin of ThirdParty/gRPC, into Intermediate/, and compiled by
// Private/AnyMoLeProto.cpp; they are never committed, and the generated headers refuse a protobuf of another
// version (their PROTOBUF_VERSION check), so stubs and libraries always match.
using System;
using System.Diagnostics;
using System.IO;
using UnrealBuildTool;

public class AnyMoLeClient : ModuleRules
{
	public AnyMoLeClient(ReadOnlyTargetRules Target) : base(Target)
	{
		PCHUsage = PCHUsageMode.NoPCHs;
		CppStandard = CppStandardVersion.Cpp17;
		bUseRTTI = false;
		bEnableExceptions = false;

		PrivateDependencyModuleNames.AddRange(new string[] { "Core", "gRPC" });
		AddEngineThirdPartyPrivateStaticDependencies(Target, "OpenSSL");  // SHA-256 of uploads

		string Generated = Path.Combine(PluginDirectory, "Intermediate", "AnyMoLeProto");
		GenerateStubs(Generated);
		PrivateIncludePaths.Add(Generated);
	}

	// The contract: Resources/proto in a packaged plugin, else the repository's proto/ two levels up.
	private string FindProtoRoot()
	{
		string[] Candidates = {
			Path.Combine(PluginDirectory, "Resources", "proto"),
			Path.GetFullPath(Path.Combine(PluginDirectory, "..", "..", "proto")),
		};
		foreach (string Root in Candidates)
		{
			if (File.Exists(Path.Combine(Root, "anymole", "v1", "anymole.proto"))) return Root;
		}
		throw new BuildException("AnyMoLe: anymole/v1/anymole.proto not found in {0}", string.Join(" or ", Candidates));
	}

	private void GenerateStubs(string OutDir)
	{
		string ProtoRoot = FindProtoRoot();
		string Proto = Path.Combine(ProtoRoot, "anymole", "v1", "anymole.proto");
		string Header = Path.Combine(OutDir, "anymole", "v1", "anymole.grpc.pb.h");
		if (File.Exists(Header) && File.GetLastWriteTimeUtc(Header) >= File.GetLastWriteTimeUtc(Proto)) return;

		string Host = BuildHostPlatform.Current.Platform.ToString();
		string Exe = BuildHostPlatform.Current.Platform == UnrealTargetPlatform.Win64 ? ".exe" : "";
		string Bin = Path.Combine(ModuleDirectory, "..", "ThirdParty", "gRPC", "bin", Host);
		string Protoc = Path.Combine(Bin, "protoc" + Exe);
		string Plugin = Path.Combine(Bin, "grpc_cpp_plugin" + Exe);
		Directory.CreateDirectory(OutDir);
		var Start = new ProcessStartInfo(Protoc,
			string.Format("--proto_path=\"{0}\" --cpp_out=\"{1}\" --grpc_out=\"{1}\" --plugin=protoc-gen-grpc=\"{2}\" \"{3}\"",
				ProtoRoot, OutDir, Plugin, Proto))
		{
			UseShellExecute = false,
			RedirectStandardError = true,
		};
		using (Process P = Process.Start(Start))
		{
			string Errors = P.StandardError.ReadToEnd();
			P.WaitForExit();
			if (P.ExitCode != 0)
			{
				throw new BuildException("AnyMoLe: protoc failed on {0}: {1}", Proto, Errors);
			}
		}
	}
}
