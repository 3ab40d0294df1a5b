// The editor module: an Animation Sequence action in the Content Browser ("Fill In-betweens with AnyMoLe...")
// that opens the dockable AnyMoLe panel on that sequence; the panel is also under Window > AnyMoLe.
#include "Animation/AnimSequence.h"
#include "ContentBrowserMenuContexts.h"
#include "Framework/Docking/TabManager.h"
#include "Modules/ModuleManager.h"
#include "ToolMenus.h"
#include "Widgets/Docking/SDockTab.h"

#include "SAnyMoLePanel.h"

#define LOCTEXT_NAMESPACE "AnyMoLe"

class FAnyMoLeEditorModule : public IModuleInterface
{
public:
	virtual void StartupModule() override
	{
		FGlobalTabmanager::Get()
			->RegisterNomadTabSpawner(TabId, FOnSpawnTab::CreateRaw(this, &FAnyMoLeEditorModule::SpawnTab))
			.SetDisplayName(LOCTEXT("TabTitle", "AnyMoLe"))
			.SetTooltipText(LOCTEXT("TabTip", "Fill the in-betweens of an Animation Sequence with an AnyMoLe server"));
		UToolMenus::RegisterStartupCallback(FSimpleMulticastDelegate::FDelegate::CreateRaw(this, &FAnyMoLeEditorModule::RegisterMenus));
	}

	virtual void ShutdownModule() override
	{
		UToolMenus::UnRegisterStartupCallback(this);
		UToolMenus::UnregisterOwner(this);
		FGlobalTabmanager::Get()->UnregisterNomadTabSpawner(TabId);
	}

private:
	static const FName TabId;
	TWeakPtr<SAnyMoLePanel> Panel;

	TSharedRef<SDockTab> SpawnTab(const FSpawnTabArgs&)
	{
		TSharedRef<SAnyMoLePanel> Widget = SNew(SAnyMoLePanel);
		Panel = Widget;
		return SNew(SDockTab).TabRole(ETabRole::NomadTab)[Widget];
	}

	void OpenOn(UAnimSequence* Sequence)
	{
		FGlobalTabmanager::Get()->TryInvokeTab(TabId);
		if (TSharedPtr<SAnyMoLePanel> Open = Panel.Pin())
		{
			Open->SetSequence(Sequence);
		}
	}

	void RegisterMenus()
	{
		FToolMenuOwnerScoped Owner(this);
		UToolMenu* Menu = UE::ContentBrowser::ExtendToolMenu_AssetContextMenu(UAnimSequence::StaticClass());
		FToolMenuSection& Section = Menu->FindOrAddSection("GetAssetActions");
		Section.AddDynamicEntry(NAME_None, FNewToolMenuSectionDelegate::CreateLambda([this](FToolMenuSection& InSection) {
			const FToolUIAction Action(FToolMenuExecuteAction::CreateLambda([this](const FToolMenuContext& Context) {
				// SelectedAssets / LoadFirstSelectedObject: the 5.2+ API (GetSelectedObjects is deprecated).
				if (const UContentBrowserAssetContextMenuContext* Assets = UContentBrowserAssetContextMenuContext::FindContextWithAssets(Context))
				{
					OpenOn(Assets->LoadFirstSelectedObject<UAnimSequence>());
				}
			}));
			InSection.AddMenuEntry(TEXT("AnyMoLe_FillInbetweens"), LOCTEXT("FillAction", "Fill In-betweens with AnyMoLe..."),
				LOCTEXT("FillActionTip", "Open the AnyMoLe panel on this sequence: pick the context, keys and method, and fill the frames between"),
				FSlateIcon(), Action);
		}));
	}
};

const FName FAnyMoLeEditorModule::TabId(TEXT("AnyMoLe"));

IMPLEMENT_MODULE(FAnyMoLeEditorModule, AnyMoLeEditor)

#undef LOCTEXT_NAMESPACE
