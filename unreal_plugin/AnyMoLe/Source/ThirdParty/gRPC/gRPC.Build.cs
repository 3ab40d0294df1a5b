// gRPC, protobuf and abseil as prebuilt static libraries, the way TurboLink and Tempo ship them: this folder holds
//   include/                          grpc, grpcpp, google/protobuf, absl headers (one version of each)
//   lib/<Win64|Mac|Linux>/Release/    their static libraries (*.lib / *.a), built with the engine's C++ runtime
//   bin/<Win64|Mac|Linux>/            protoc and grpc_cpp_plugin of the same versions (AnyMoLeClient.Build.cs
//                                     runs them to generate the stubs)
// README.md says how to obtain them. OpenSSL and zlib come from the engine, so that a process holds one copy.
using System.IO;
using UnrealBuildTool;

public class gRPC : ModuleRules
{
	public gRPC(ReadOnlyTargetRules Target) : base(Target)
	{
		Type = ModuleType.External;

		string Root = ModuleDirectory;
		string Platform = Target.Platform.ToString();
		string LibDir = Path.Combine(Root, "lib", Platform, "Release");
		if (!Directory.Exists(LibDir))
		{
			throw new BuildException("AnyMoLe: no gRPC libraries in {0}; see the plugin's README (Install, step 2)", LibDir);
		}

		PublicSystemIncludePaths.Add(Path.Combine(Root, "include"));
		string Pattern = Target.Platform == UnrealTargetPlatform.Win64 ? "*.lib" : "*.a";
		foreach (string Lib in Directory.GetFiles(LibDir, Pattern))
		{
			PublicAdditionalLibraries.Add(Lib);
		}

		// Built without RTTI and exceptions, as Unreal modules are (defines as in Tempo's gRPC.Build.cs).
		PublicDefinitions.Add("GOOGLE_PROTOBUF_NO_RTTI=1");
		PublicDefinitions.Add("GPR_FORBID_UNREACHABLE_CODE=1");
		PublicDefinitions.Add("GRPC_ALLOW_EXCEPTIONS=0");
		PublicDefinitions.Add("PROTOBUF_ENABLE_DEBUG_LOGGING_MAY_LEAK_PII=0");
		PublicDefinitions.Add("PROTOBUF_USE_DLLS=0");

		AddEngineThirdPartyPrivateStaticDependencies(Target, "OpenSSL", "zlib");
		if (Target.Platform == UnrealTargetPlatform.Win64)
		{
			PublicSystemLibraries.AddRange(new string[] { "ws2_32.lib", "crypt32.lib", "iphlpapi.lib", "dbghelp.lib", "bcrypt.lib" });
		}
		else if (Target.Platform == UnrealTargetPlatform.Mac)
		{
			PublicFrameworks.AddRange(new string[] { "CoreFoundation", "Security" });
		}
	}
}
