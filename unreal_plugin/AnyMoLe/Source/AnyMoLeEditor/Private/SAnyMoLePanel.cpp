#include "SAnyMoLePanel.h"

#include "Animation/AnimData/IAnimationDataModel.h"
#include "Animation/AnimSequence.h"
#include "Animation/Skeleton.h"
#include "Brushes/SlateDynamicImageBrush.h"
#include "Engine/SkeletalMesh.h"
#include "Framework/Notifications/NotificationManager.h"
#include "IImageWrapper.h"
#include "IImageWrapperModule.h"
#include "Misc/FileHelper.h"
#include "Modules/ModuleManager.h"
#include "Runtime/Launch/Resources/Version.h"
#include "Widgets/Images/SImage.h"
#include "Widgets/Input/SButton.h"
#include "Widgets/Input/SEditableTextBox.h"
#include "Widgets/Input/SSpinBox.h"
#include "Widgets/Layout/SBox.h"
#include "Widgets/Layout/SScrollBox.h"
#include "Widgets/Notifications/SNotificationList.h"
#include "Widgets/Notifications/SProgressBar.h"
#include "Widgets/Text/STextBlock.h"

#include "AnyMoLe/UnrealSpace.h"
#include "AnyMoLeSettings.h"
#include "EngineBridge.h"
#include "FillTask.h"

#define LOCTEXT_NAMESPACE "AnyMoLe"

namespace
{
// Tags every job of this plugin carries, so that ListJobs finds them after a restart.
const char kEditorTag[] = "editor";
const char kEditorValue[] = "unreal";

TArray<int32> ParseKeys(const FString& Text)
{
	TArray<FString> Parts;
	Text.ParseIntoArray(Parts, TEXT(","), true);
	TArray<int32> Keys;
	for (const FString& Part : Parts)
	{
		Keys.Add(FCString::Atoi(*Part.TrimStartAndEnd()));
	}
	return Keys;
}

FString JoinKeys(const TArray<int32>& Keys)
{
	return FString::JoinBy(Keys, TEXT(","), [](int32 K) { return FString::FromInt(K); });
}
}  // namespace

void SAnyMoLePanel::Construct(const FArguments& InArgs)
{
	ChildSlot
	[
		SNew(SScrollBox)
		+ SScrollBox::Slot().Padding(8)
		[
			SNew(SVerticalBox)
			+ SVerticalBox::Slot().AutoHeight().Padding(0, 2)
			[
				SNew(SHorizontalBox)
				+ SHorizontalBox::Slot().FillWidth(1.f).VAlign(VAlign_Center)
				[
					SNew(STextBlock).Text_Lambda([this] { return HealthText; }).AutoWrapText(true)
				]
				+ SHorizontalBox::Slot().AutoWidth()
				[
					SNew(SButton).Text(LOCTEXT("Check", "Check Server")).OnClicked_Lambda([this] { CheckServer(); return FReply::Handled(); })
				]
			]
			+ SVerticalBox::Slot().AutoHeight().Padding(0, 2)
			[
				SNew(STextBlock).Text_Lambda([this] {
					return Sequence.IsValid() ? FText::FromString(Sequence->GetPathName())
											  : LOCTEXT("NoSequence", "Right-click an Animation Sequence: Fill In-betweens with AnyMoLe...");
				})
			]
			+ SVerticalBox::Slot().AutoHeight().Padding(0, 2)
			[
				SNew(SHorizontalBox)
				+ SHorizontalBox::Slot().AutoWidth().VAlign(VAlign_Center).Padding(0, 0, 4, 0)
				[
					SNew(STextBlock).Text(LOCTEXT("Method", "Method"))
				]
				+ SHorizontalBox::Slot().FillWidth(1.f)
				[
					SAssignNew(MethodCombo, SComboBox<FMethodPtr>)
					.OptionsSource(&Methods)
					.OnGenerateWidget(this, &SAnyMoLePanel::MakeMethodWidget)
					.OnSelectionChanged_Lambda([this](FMethodPtr Method, ESelectInfo::Type) {
						if (Method && !Method->available)
						{
							return;  // disabled entry: the server said why in its tooltip
						}
						SelectedMethod = Method;
						Presets.Reset();
						for (const std::string& Preset : Method ? Method->presets : std::vector<std::string>{})
						{
							Presets.Add(MakeShared<FString>(AnyMoLeEditor::ToFString(Preset)));
						}
						SelectedPreset = Presets.Num() ? Presets[0] : nullptr;
						if (PresetCombo)
						{
							PresetCombo->RefreshOptions();
							PresetCombo->SetSelectedItem(SelectedPreset);
						}
					})
					[
						SNew(STextBlock).Text_Lambda([this] {
							return SelectedMethod ? FText::FromString(AnyMoLeEditor::ToFString(SelectedMethod->name)) : LOCTEXT("NoMethod", "(check the server)");
						})
					]
				]
				+ SHorizontalBox::Slot().AutoWidth().VAlign(VAlign_Center).Padding(8, 0, 4, 0)
				[
					SNew(STextBlock).Text(LOCTEXT("Preset", "Preset"))
				]
				+ SHorizontalBox::Slot().FillWidth(1.f)
				[
					SAssignNew(PresetCombo, SComboBox<TSharedPtr<FString>>)
					.OptionsSource(&Presets)
					.OnGenerateWidget_Lambda([](TSharedPtr<FString> P) { return SNew(STextBlock).Text(FText::FromString(*P)); })
					.OnSelectionChanged_Lambda([this](TSharedPtr<FString> P, ESelectInfo::Type) { SelectedPreset = P; })
					[
						SNew(STextBlock).Text_Lambda([this] { return SelectedPreset ? FText::FromString(*SelectedPreset) : FText::GetEmpty(); })
					]
				]
			]
			+ SVerticalBox::Slot().AutoHeight().Padding(0, 2)
			[
				SNew(SHorizontalBox)
				+ SHorizontalBox::Slot().AutoWidth().VAlign(VAlign_Center).Padding(0, 0, 4, 0)
				[
					SNew(STextBlock).Text(LOCTEXT("Context", "Context frames (first, end)"))
				]
				+ SHorizontalBox::Slot().FillWidth(1.f)
				[
					SNew(SSpinBox<int32>).MinValue(0).Value_Lambda([this] { return ContextStart; })
					.OnValueChanged_Lambda([this](int32 V) { ContextStart = V; })
				]
				+ SHorizontalBox::Slot().FillWidth(1.f)
				[
					SNew(SSpinBox<int32>).MinValue(1).Value_Lambda([this] { return ContextEnd; })
					.OnValueChanged_Lambda([this](int32 V) { ContextEnd = V; })
				]
				+ SHorizontalBox::Slot().AutoWidth().VAlign(VAlign_Center).Padding(8, 0, 4, 0)
				[
					SNew(STextBlock).Text(LOCTEXT("Keys", "Keys"))
				]
				+ SHorizontalBox::Slot().FillWidth(1.f)
				[
					SNew(SEditableTextBox).Text_Lambda([this] { return FText::FromString(KeysText); })
					.OnTextCommitted_Lambda([this](const FText& T, ETextCommit::Type) { KeysText = T.ToString(); })
				]
			]
			+ SVerticalBox::Slot().AutoHeight().Padding(0, 4)
			[
				SNew(SHorizontalBox)
				+ SHorizontalBox::Slot().AutoWidth()
				[
					SNew(SButton).Text(LOCTEXT("Fill", "Fill"))
					.IsEnabled_Lambda([this] { return !Task.IsValid() && Sequence.IsValid() && SelectedMethod.IsValid(); })
					.OnClicked(this, &SAnyMoLePanel::OnFill)
				]
				+ SHorizontalBox::Slot().AutoWidth().Padding(4, 0)
				[
					SNew(SButton).Text(LOCTEXT("Cancel", "Cancel"))
					.IsEnabled_Lambda([this] { return Task.IsValid(); })
					.OnClicked(this, &SAnyMoLePanel::OnCancel)
				]
				+ SHorizontalBox::Slot().FillWidth(1.f).VAlign(VAlign_Center).Padding(4, 0)
				[
					SNew(SProgressBar).Percent_Lambda([this] { return TOptional<float>(Fraction); })
				]
			]
			+ SVerticalBox::Slot().AutoHeight()
			[
				SNew(STextBlock).Text_Lambda([this] { return StageText; })
			]
			+ SVerticalBox::Slot().AutoHeight()
			[
				SNew(STextBlock).Text_Lambda([this] { return ErrorText; }).ColorAndOpacity(FLinearColor(1.f, 0.35f, 0.3f)).AutoWrapText(true)
			]
			+ SVerticalBox::Slot().AutoHeight().Padding(0, 4)
			[
				SNew(SBox).HeightOverride(256.f)
				[
					SNew(SImage).Image_Lambda([this]() -> const FSlateBrush* { return PreviewBrush.Get(); })
				]
			]
			+ SVerticalBox::Slot().AutoHeight().Padding(0, 4)
			[
				SNew(SHorizontalBox)
				+ SHorizontalBox::Slot().FillWidth(1.f).VAlign(VAlign_Center)
				[
					SNew(STextBlock).Text(LOCTEXT("Jobs", "Jobs of this editor on the server"))
				]
				+ SHorizontalBox::Slot().AutoWidth()
				[
					SNew(SButton).Text(LOCTEXT("Refresh", "Refresh")).OnClicked_Lambda([this] { RefreshJobs(); return FReply::Handled(); })
				]
			]
			+ SVerticalBox::Slot().AutoHeight()
			[
				SAssignNew(JobList, SListView<FJobPtr>).ListItemsSource(&Jobs).OnGenerateRow(this, &SAnyMoLePanel::MakeJobRow)
			]
		]
	];
	CheckServer();
	RefreshJobs();
}

SAnyMoLePanel::~SAnyMoLePanel()
{
	if (Task)
	{
		Task->Detach();  // the job runs on; Refresh finds it again
	}
}

TSharedPtr<FAnyMoLeFillTask, ESPMode::ThreadSafe> SAnyMoLePanel::MakeTask()
{
	const UAnyMoLeSettings* Settings = GetDefault<UAnyMoLeSettings>();
	anymole::SessionOptions Options;
	Options.target = AnyMoLeEditor::ToStd(Settings->ServerAddress);
	Options.token = AnyMoLeEditor::ToStd(Settings->Token);
	Options.client_name = "anymole-unreal 0.1.0 (Unreal " + AnyMoLeEditor::ToStd(FString(ENGINE_VERSION_STRING)) + ")";
	FString Pem;
	if (!Settings->CaFile.FilePath.IsEmpty() && FFileHelper::LoadFileToString(Pem, *Settings->CaFile.FilePath))
	{
		Options.tls_ca_pem = AnyMoLeEditor::ToStd(Pem);
	}
	// Handlers hold the panel weakly: a closed panel drops late events.
	TWeakPtr<SAnyMoLePanel> Weak = SharedThis(this);
	FAnyMoLeFillTask::FHandlers Handlers;
	Handlers.OnConnected = [Weak](const anymole::ServerInfo& Info) {
		if (TSharedPtr<SAnyMoLePanel> Self = Weak.Pin())
		{
			Self->HealthText = FText::Format(LOCTEXT("Healthy", "Connected: anymole {0}, protocol {1}.{2}, {3} device(s)"),
				FText::FromString(AnyMoLeEditor::ToFString(Info.server_version)), Info.protocol.major, Info.protocol.minor,
				static_cast<int32>(Info.devices.size()));
			Self->Methods.Reset();
			for (const anymole::MethodInfo& M : Info.methods)
			{
				Self->Methods.Add(MakeShared<anymole::MethodInfo>(M));
			}
			Self->MethodCombo->RefreshOptions();
			for (const FMethodPtr& M : Self->Methods)
			{
				if (M->available)
				{
					Self->MethodCombo->SetSelectedItem(M);
					break;
				}
			}
		}
	};
	Handlers.OnEvent = [Weak](const anymole::JobEvent& Event) { if (auto Self = Weak.Pin()) Self->OnEvent(Event); };
	Handlers.OnResult = [Weak](const anymole::Clip& Result) { if (auto Self = Weak.Pin()) Self->OnResult(Result); };
	Handlers.OnError = [Weak](const FText& Error) { if (auto Self = Weak.Pin()) Self->OnError(Error); };
	Handlers.OnJobs = [Weak](const std::vector<anymole::JobSummary>& Found) {
		if (TSharedPtr<SAnyMoLePanel> Self = Weak.Pin())
		{
			Self->Jobs.Reset();
			for (const anymole::JobSummary& J : Found)
			{
				Self->Jobs.Add(MakeShared<anymole::JobSummary>(J));
			}
			Self->JobList->RequestListRefresh();
		}
	};
	return MakeShared<FAnyMoLeFillTask, ESPMode::ThreadSafe>(Options, MoveTemp(Handlers));
}

void SAnyMoLePanel::CheckServer()
{
	HealthText = LOCTEXT("Checking", "Checking the server...");
	MakeTask()->StartHandshake();
}

void SAnyMoLePanel::RefreshJobs()
{
	MakeTask()->StartListJobs({{kEditorTag, kEditorValue}});
}

void SAnyMoLePanel::SetSequence(UAnimSequence* InSequence)
{
	Sequence = InSequence;
	if (!InSequence || !InSequence->GetDataModel())
	{
		return;
	}
	// Defaults: the first half of the sequence as context, its last frame as the key.
	const int32 Last = InSequence->GetDataModel()->GetNumberOfKeys() - 1;
	ContextStart = 0;
	ContextEnd = FMath::Max(1, Last / 2);
	KeysText = FString::FromInt(Last);
}

USkeletalMesh* SAnyMoLePanel::FindMesh(UAnimSequence& Of)
{
	// The sequence's preview mesh, else its skeleton's (both editor-only accessors; not in the verified notes).
	USkeletalMesh* Mesh = Of.GetPreviewMesh();
	if (!Mesh && Of.GetSkeleton())
	{
		Mesh = Of.GetSkeleton()->GetPreviewMesh(true);
	}
	return Mesh;
}

FReply SAnyMoLePanel::OnFill()
{
	ErrorText = FText::GetEmpty();
	USkeletalMesh* Mesh = Sequence.IsValid() ? FindMesh(*Sequence) : nullptr;
	if (!Mesh)
	{
		OnError(LOCTEXT("NoMesh", "The sequence has no preview mesh: set one in the Animation editor."));
		return FReply::Handled();
	}
	FText Error;
	anymole::CharacterAsset Character;
	anymole::ue::MotionUe Motion;
	if (!AnyMoLeEditor::ReadCharacter(*Mesh, Character, Error) || !AnyMoLeEditor::ReadMotion(*Sequence, Mesh->GetRefSkeleton(), Motion, Error))
	{
		OnError(Error);
		return FReply::Handled();
	}
	const TArray<int32> Keys = ParseKeys(KeysText);
	const int32 Frames = static_cast<int32>(Motion.frame_count);
	if (ContextStart < 0 || ContextEnd <= ContextStart || ContextEnd > Frames)
	{
		OnError(FText::Format(LOCTEXT("BadContext", "context: give 0 <= first < end <= {0}"), Frames));
		return FReply::Handled();
	}
	for (int32 I = 0; I < Keys.Num(); ++I)
	{
		if (Keys[I] < ContextEnd || Keys[I] >= Frames || (I > 0 && Keys[I] <= Keys[I - 1]))
		{
			OnError(FText::Format(LOCTEXT("BadKeys", "keys: give increasing frames in {0}..{1}"), ContextEnd, Frames - 1));
			return FReply::Handled();
		}
	}
	if (Keys.Num() == 0)
	{
		OnError(LOCTEXT("NoKeys", "keys: give at least one frame after the context"));
		return FReply::Handled();
	}

	// The context and the full evaluated pose at each key, in canonical space; every joint's translation goes
	// out only when a non-root bone moves away from its bind offset.
	const bool bTranslations = anymole::ue::AnimatesTranslations(Motion, anymole::ue::SkeletonToUnreal(Character.skeleton));
	anymole::ue::MotionUe Context = Motion;
	Context.frame_count = static_cast<uint32_t>(ContextEnd - ContextStart);
	Context.keys.assign(Motion.keys.begin() + size_t(ContextStart) * Motion.num_joints, Motion.keys.begin() + size_t(ContextEnd) * Motion.num_joints);
	anymole::JobRequest Request;
	anymole::Status St = anymole::ue::ClipFromUnreal(Context, bTranslations, &Request.context);
	for (int32 K : Keys)
	{
		anymole::Keyframe Key;
		if (St.ok())
		{
			St = anymole::ue::KeyframeFromUnreal(Motion, K, K - ContextStart, bTranslations, &Key);
		}
		Request.keyframes.push_back(MoveTemp(Key));
	}
	if (!St.ok())
	{
		OnError(AnyMoLeEditor::ToText(St));
		return FReply::Handled();
	}
	Request.method = SelectedMethod->name;
	Request.preset = SelectedPreset ? AnyMoLeEditor::ToStd(*SelectedPreset) : std::string();
	Request.label = AnyMoLeEditor::ToStd(Sequence->GetName());
	// What a restarted editor needs to put the result where it belongs.
	Request.client_tags = {
		{kEditorTag, kEditorValue},
		{"asset", AnyMoLeEditor::ToStd(Sequence->GetPathName())},
		{"first_frame", std::to_string(ContextStart)},
		{"context_end", std::to_string(ContextEnd)},
		{"keys", AnyMoLeEditor::ToStd(JoinKeys(Keys))},
	};

	Target = Sequence;
	TargetFirstFrame = ContextStart;
	TargetKeep.Reset();
	for (int32 F = ContextStart; F < ContextEnd; ++F)
	{
		TargetKeep.Add(F);
	}
	TargetKeep.Append(Keys);
	Fraction = 0.f;
	PreviewCount = 0;
	StageText = LOCTEXT("Submitting", "Uploading the character and submitting...");

	FNotificationInfo Info(FText::Format(LOCTEXT("Running", "AnyMoLe: filling {0}"), FText::FromString(Sequence->GetName())));
	Info.bFireAndForget = false;
	Info.bUseThrobber = true;
	Info.ButtonDetails.Add(FNotificationButtonInfo(LOCTEXT("CancelButton", "Cancel"), LOCTEXT("CancelTip", "Cancel the job on the server"),
		FSimpleDelegate::CreateLambda([Weak = TWeakPtr<SAnyMoLePanel>(SharedThis(this))] { if (auto Self = Weak.Pin()) Self->OnCancel(); }),
		SNotificationItem::CS_Pending));
	Notification = FSlateNotificationManager::Get().AddNotification(Info);
	if (Notification)
	{
		Notification->SetCompletionState(SNotificationItem::CS_Pending);
	}
	Task = MakeTask();
	Task->StartFill(MoveTemp(Character), MoveTemp(Request));
	return FReply::Handled();
}

FReply SAnyMoLePanel::OnCancel()
{
	if (Task)
	{
		StageText = LOCTEXT("Cancelling", "Cancelling...");
		Task->Cancel();
	}
	return FReply::Handled();
}

void SAnyMoLePanel::OnEvent(const anymole::JobEvent& Event)
{
	using Kind = anymole::JobEvent::Kind;
	switch (Event.kind)
	{
		case Kind::Queued:
			StageText = FText::Format(LOCTEXT("Queued", "Queued: {0} job(s) ahead"), Event.queue_position);
			break;
		case Kind::Progress:
		{
			Fraction = Event.fraction;
			const FText Stage = FText::FromString(AnyMoLeEditor::ToFString(Event.stage));
			StageText = Event.has_eta
				? FText::Format(LOCTEXT("ProgressEta", "{0} {1}  (ETA {2} s)"), Stage, FText::FromString(AnyMoLeEditor::ToFString(Event.message)), FText::AsNumber(FMath::RoundToInt(Event.eta_seconds)))
				: FText::Format(LOCTEXT("ProgressNoEta", "{0} {1}"), Stage, FText::FromString(AnyMoLeEditor::ToFString(Event.message)));
			if (Notification)
			{
				Notification->SetText(FText::Format(LOCTEXT("NotificationProgress", "AnyMoLe: {0}"), StageText));
			}
			break;
		}
		case Kind::Preview:
			ShowPreview(Event);
			break;
		case Kind::Failed:
			OnError(FText::FromString(AnyMoLeEditor::ToFString(Event.failed_field.empty() ? Event.message : Event.failed_field + ": " + Event.message)));
			break;
		case Kind::Cancelled:
			Finish(false, LOCTEXT("Cancelled", "Cancelled; the sequence is unchanged."));
			break;
		case Kind::Interrupted:
			Finish(false, FText::FromString(AnyMoLeEditor::ToFString("Interrupted: " + Event.message + " (fill again)")));
			break;
		default:
			break;  // motion chunks: the result is written once, when the job completes
	}
}

void SAnyMoLePanel::ShowPreview(const anymole::JobEvent& Event)
{
	IImageWrapperModule& Images = FModuleManager::LoadModuleChecked<IImageWrapperModule>(TEXT("ImageWrapper"));
	const EImageFormat Format = Event.mime_type == "image/png" ? EImageFormat::PNG : EImageFormat::JPEG;
	TSharedPtr<IImageWrapper> Wrapper = Images.CreateImageWrapper(Format);
	TArray<uint8> Bgra;
	if (Wrapper && Wrapper->SetCompressed(Event.image.data(), Event.image.size()) && Wrapper->GetRaw(ERGBFormat::BGRA, 8, Bgra))
	{
		const FName Name(*FString::Printf(TEXT("AnyMoLePreview%d"), ++PreviewCount));
		PreviewBrush = FSlateDynamicImageBrush::CreateWithImageData(Name, FVector2D(Wrapper->GetWidth(), Wrapper->GetHeight()), Bgra);
	}
}

void SAnyMoLePanel::OnResult(const anymole::Clip& Result)
{
	FText Error;
	USkeletalMesh* Mesh = Target.IsValid() ? FindMesh(*Target) : nullptr;
	if (!Mesh || !AnyMoLeEditor::WriteResult(*Target, Mesh->GetRefSkeleton(), Result, TargetFirstFrame, TargetKeep, Error))
	{
		OnError(Mesh ? Error : LOCTEXT("TargetGone", "The sequence was closed or deleted before the result arrived."));
		return;
	}
	Finish(true, FText::Format(LOCTEXT("Done", "Filled {0} frames (Ctrl+Z undoes it)."), static_cast<int32>(Result.frame_count)));
}

void SAnyMoLePanel::OnError(const FText& Error)
{
	ErrorText = Error;  // verbatim, with the field the server named
	if (Task)
	{
		Finish(false, Error);
	}
}

void SAnyMoLePanel::Finish(bool bSuccess, const FText& Message)
{
	StageText = Message;
	Fraction = bSuccess ? 1.f : Fraction;
	if (Notification)
	{
		Notification->SetText(Message);
		Notification->SetCompletionState(bSuccess ? SNotificationItem::CS_Success : SNotificationItem::CS_Fail);
		Notification->ExpireAndFadeout();
		Notification.Reset();
	}
	Task.Reset();
	RefreshJobs();
}

void SAnyMoLePanel::Reattach(FJobPtr Job)
{
	// The tags written at submission say which sequence and frames the result belongs to.
	auto Tag = [&Job](const char* Key) {
		const auto It = Job->client_tags.find(Key);
		return It == Job->client_tags.end() ? FString() : AnyMoLeEditor::ToFString(It->second);
	};
	Target = LoadObject<UAnimSequence>(nullptr, *Tag("asset"));
	TargetFirstFrame = FCString::Atoi(*Tag("first_frame"));
	TargetKeep.Reset();
	for (int32 F = TargetFirstFrame; F < FCString::Atoi(*Tag("context_end")); ++F)
	{
		TargetKeep.Add(F);
	}
	TargetKeep.Append(ParseKeys(Tag("keys")));
	Task = MakeTask();
	Task->StartReattach(AnyMoLeEditor::ToFString(Job->job_id));
}

TSharedRef<SWidget> SAnyMoLePanel::MakeMethodWidget(FMethodPtr Method) const
{
	// Unavailable methods stay listed, greyed out, with the server's reason; available ones show their limits.
	FString Tip = AnyMoLeEditor::ToFString(Method->available ? Method->description : Method->unavailable_reason);
	if (Method->available && Method->min_context_seconds > 0)
	{
		Tip += FString::Printf(TEXT("\nContext: at least %g s."), Method->min_context_seconds);
	}
	if (Method->available && Method->key_spacing_seconds > 0)
	{
		Tip += FString::Printf(TEXT("\nKeys: exactly every %g s after the context's last frame."), Method->key_spacing_seconds);
	}
	if (Method->available && Method->max_gap_seconds > 0)
	{
		Tip += FString::Printf(TEXT("\nGaps: at most %g s between poses."), Method->max_gap_seconds);
	}
	return SNew(STextBlock)
		.Text(FText::FromString(AnyMoLeEditor::ToFString(Method->name + " - " + Method->description)))
		.ToolTipText(FText::FromString(Tip))
		.IsEnabled(Method->available);
}

TSharedRef<ITableRow> SAnyMoLePanel::MakeJobRow(FJobPtr Job, const TSharedRef<STableViewBase>& Owner)
{
	static const TCHAR* const States[] = {TEXT("?"), TEXT("queued"), TEXT("running"), TEXT("completed"), TEXT("failed"), TEXT("cancelled"), TEXT("interrupted")};
	const bool bLive = Job->state == anymole::JobState::Queued || Job->state == anymole::JobState::Running || Job->state == anymole::JobState::Completed;
	return SNew(STableRow<FJobPtr>, Owner)
	[
		SNew(SHorizontalBox)
		+ SHorizontalBox::Slot().FillWidth(1.f).VAlign(VAlign_Center)
		[
			SNew(STextBlock).Text(FText::FromString(FString::Printf(TEXT("%s  %s  %s"), *AnyMoLeEditor::ToFString(Job->label),
				*AnyMoLeEditor::ToFString(Job->method), States[static_cast<int32>(Job->state)])))
		]
		+ SHorizontalBox::Slot().AutoWidth()
		[
			SNew(SButton).Text(LOCTEXT("Reattach", "Re-attach")).IsEnabled(bLive && !Task.IsValid())
			.OnClicked_Lambda([this, Job] { Reattach(Job); return FReply::Handled(); })
		]
	];
}

#undef LOCTEXT_NAMESPACE
