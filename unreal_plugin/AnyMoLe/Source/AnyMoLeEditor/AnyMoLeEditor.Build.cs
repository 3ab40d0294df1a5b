// The thin editor module: engine types in and out, everything else in AnyMoLeClient. Module names as in
// engine_api_notes.md section 1.7.
using UnrealBuildTool;

public class AnyMoLeEditor : ModuleRules
{
	public AnyMoLeEditor(ReadOnlyTargetRules Target) : base(Target)
	{
		PCHUsage = PCHUsageMode.UseExplicitOrSharedPCHs;
		PrivateDependencyModuleNames.AddRange(new string[] {
			"AnyMoLeClient",
			"Core", "CoreUObject", "Engine", "UnrealEd", "AssetTools", "AssetRegistry", "ContentBrowser",
			"ToolMenus", "Slate", "SlateCore", "InputCore", "DeveloperSettings", "ImageWrapper",
		});
	}
}
