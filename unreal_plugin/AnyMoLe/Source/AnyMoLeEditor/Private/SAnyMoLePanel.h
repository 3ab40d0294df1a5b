// The dockable AnyMoLe panel: server health, method and preset from the server's capabilities, the context
// range and keys of the sequence, Fill / Cancel with progress, the streamed preview, and the jobs a restarted
// editor can re-attach to.
#pragma once

#include "CoreMinimal.h"
#include "Widgets/DeclarativeSyntaxSupport.h"
#include "Widgets/Input/SComboBox.h"
#include "Widgets/SCompoundWidget.h"
#include "Widgets/Views/SListView.h"

#include "AnyMoLe/Types.h"

class FAnyMoLeFillTask;
class SNotificationItem;
class UAnimSequence;
class USkeletalMesh;
struct FSlateDynamicImageBrush;

class SAnyMoLePanel : public SCompoundWidget
{
public:
	SLATE_BEGIN_ARGS(SAnyMoLePanel) {}
	SLATE_END_ARGS()

	void Construct(const FArguments& InArgs);
	virtual ~SAnyMoLePanel() override;

	// The sequence the Content Browser action was run on; the context and keys default from it.
	void SetSequence(UAnimSequence* InSequence);

private:
	using FMethodPtr = TSharedPtr<anymole::MethodInfo>;
	using FJobPtr = TSharedPtr<anymole::JobSummary>;

	TSharedPtr<FAnyMoLeFillTask, ESPMode::ThreadSafe> MakeTask();
	static USkeletalMesh* FindMesh(UAnimSequence& Of);
	void CheckServer();
	void RefreshJobs();
	FReply OnFill();
	FReply OnCancel();
	void OnEvent(const anymole::JobEvent& Event);
	void OnResult(const anymole::Clip& Result);
	void OnError(const FText& Error);
	void Finish(bool bSuccess, const FText& Message);
	void ShowPreview(const anymole::JobEvent& Event);
	void Reattach(FJobPtr Job);
	TSharedRef<SWidget> MakeMethodWidget(FMethodPtr Method) const;
	TSharedRef<ITableRow> MakeJobRow(FJobPtr Job, const TSharedRef<STableViewBase>& Owner);

	TWeakObjectPtr<UAnimSequence> Sequence;
	// Where the running job's result goes: the sequence, its first context frame, and the frames to keep.
	TWeakObjectPtr<UAnimSequence> Target;
	int32 TargetFirstFrame = 0;
	TSet<int32> TargetKeep;

	FText HealthText;
	TArray<FMethodPtr> Methods;
	FMethodPtr SelectedMethod;
	TArray<TSharedPtr<FString>> Presets;
	TSharedPtr<FString> SelectedPreset;
	int32 ContextStart = 0;
	int32 ContextEnd = 1;
	FString KeysText;

	TSharedPtr<FAnyMoLeFillTask, ESPMode::ThreadSafe> Task;
	TSharedPtr<SNotificationItem> Notification;
	float Fraction = 0.f;
	FText StageText;
	FText ErrorText;
	TSharedPtr<FSlateDynamicImageBrush> PreviewBrush;
	int32 PreviewCount = 0;

	TArray<FJobPtr> Jobs;
	TSharedPtr<SListView<FJobPtr>> JobList;
	TSharedPtr<SComboBox<FMethodPtr>> MethodCombo;
	TSharedPtr<SComboBox<TSharedPtr<FString>>> PresetCombo;
};
