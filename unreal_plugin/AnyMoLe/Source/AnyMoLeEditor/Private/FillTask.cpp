#include "FillTask.h"

#include "Async/Async.h"
#include "Misc/Guid.h"

#include "EngineBridge.h"

FAnyMoLeFillTask::FAnyMoLeFillTask(const anymole::SessionOptions& Options, FHandlers InHandlers)
	: Session(Options), Handlers(MoveTemp(InHandlers))
{
}

void FAnyMoLeFillTask::Launch(TUniqueFunction<void()> Work)
{
	Async(EAsyncExecution::Thread, MoveTemp(Work));
}

void FAnyMoLeFillTask::Post(TUniqueFunction<void()> Work) const
{
	AsyncTask(ENamedThreads::GameThread, MoveTemp(Work));
}

bool FAnyMoLeFillTask::Fail(const anymole::Status& Status) const
{
	if (Status.ok())
	{
		return false;
	}
	const FText Text = AnyMoLeEditor::ToText(Status);
	Post([Handlers = Handlers, Text] { if (Handlers.OnError) Handlers.OnError(Text); });
	return true;
}

void FAnyMoLeFillTask::StartHandshake()
{
	Launch([Self = AsShared()] {
		anymole::ServerInfo Info;
		if (Self->Fail(Self->Session.Handshake(&Info)))
		{
			return;
		}
		Self->Post([Self, Info] { if (Self->Handlers.OnConnected) Self->Handlers.OnConnected(Info); });
	});
}

void FAnyMoLeFillTask::StartListJobs(std::map<std::string, std::string> Tags)
{
	Launch([Self = AsShared(), Tags = MoveTemp(Tags)] {
		std::vector<anymole::JobSummary> Jobs;
		if (!Self->Fail(Self->Session.ListJobs(&Jobs, 0, Tags)))
		{
			Self->Post([Self, Jobs = MoveTemp(Jobs)] { if (Self->Handlers.OnJobs) Self->Handlers.OnJobs(Jobs); });
		}
	});
}

void FAnyMoLeFillTask::StartFill(anymole::CharacterAsset Character, anymole::JobRequest Request)
{
	Launch([Self = AsShared(), Character = MoveTemp(Character), Request = MoveTemp(Request)]() mutable {
		anymole::ServerInfo Info;
		if (Self->Fail(Self->Session.Handshake(&Info)))
		{
			return;
		}
		anymole::UploadResult Uploaded;
		if (Self->Fail(Self->Session.UploadCharacter(Character, &Uploaded)))
		{
			return;
		}
		Request.character_id = Uploaded.character_id;
		// A retry of this submit (after a dropped connection) must not queue a second job.
		const std::string Key = AnyMoLeEditor::ToStd(FGuid::NewGuid().ToString());
		std::string Id;
		if (Self->Fail(Self->Session.Submit(Request, &Id, nullptr, Key)))
		{
			return;
		}
		bool bCancel = false;
		{
			FScopeLock Guard(&Self->Lock);
			Self->JobId = Id;
			bCancel = Self->bCancelRequested;
		}
		if (bCancel)
		{
			Self->Session.Cancel(Id);  // Cancel was pressed while the job was being submitted
		}
		const FString JobId = AnyMoLeEditor::ToFString(Id);
		Self->Post([Self, JobId] { if (Self->Handlers.OnSubmitted) Self->Handlers.OnSubmitted(JobId); });
		Self->Follow(Id, false);
	});
}

void FAnyMoLeFillTask::StartReattach(const FString& InJobId)
{
	Launch([Self = AsShared(), Id = AnyMoLeEditor::ToStd(InJobId)] {
		{
			FScopeLock Guard(&Self->Lock);
			Self->JobId = Id;
		}
		if (!Self->Fail(Self->Session.Handshake(nullptr)))
		{
			Self->Follow(Id, true);
		}
	});
}

void FAnyMoLeFillTask::Follow(const std::string& Id, bool bSkipPreviews)
{
	bool bCompleted = false;
	auto OnEvent = [this, &bCompleted](const anymole::JobEvent& Event) {
		bCompleted = Event.kind == anymole::JobEvent::Kind::Completed;
		Post([Self = AsShared(), Event] { if (Self->Handlers.OnEvent) Self->Handlers.OnEvent(Event); });
		return true;
	};
	// A re-attaching editor skips the stored previews; a stream that drops is resumed after its last event.
	const anymole::Status Status = bSkipPreviews ? Session.Watch(Id, 0, OnEvent, true) : Session.Follow(Id, 0, OnEvent, 20);
	if (Status.code == anymole::StatusCode::Cancelled)
	{
		return;  // Detach(): the panel stopped following
	}
	if (Fail(Status) || !bCompleted)
	{
		return;
	}
	anymole::Result Result;
	if (Fail(Session.DownloadResult(Id, &Result)))
	{
		return;
	}
	Post([Self = AsShared(), Motion = MoveTemp(Result.motion)] { if (Self->Handlers.OnResult) Self->Handlers.OnResult(Motion); });
}

void FAnyMoLeFillTask::Cancel()
{
	std::string Id;
	{
		FScopeLock Guard(&Lock);
		bCancelRequested = true;
		Id = JobId;
	}
	if (!Id.empty())
	{
		Launch([Self = AsShared(), Id] { Self->Fail(Self->Session.Cancel(Id)); });
	}
}

void FAnyMoLeFillTask::Detach()
{
	Session.StopWatching();
}
