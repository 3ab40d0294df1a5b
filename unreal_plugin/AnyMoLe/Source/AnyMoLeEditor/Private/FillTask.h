// One job's life off the game thread: handshake, upload, submit (or re-attach), events, result. Session calls
// block, so they run on their own thread (Async(EAsyncExecution::Thread)); every handler is called on the game
// thread (AsyncTask(ENamedThreads::GameThread)).
#pragma once

#include "CoreMinimal.h"

#include "AnyMoLe/Session.h"

class FAnyMoLeFillTask : public TSharedFromThis<FAnyMoLeFillTask, ESPMode::ThreadSafe>
{
public:
	struct FHandlers
	{
		TFunction<void(const anymole::ServerInfo&)> OnConnected;
		TFunction<void(const FString& JobId)> OnSubmitted;
		TFunction<void(const anymole::JobEvent&)> OnEvent;
		// The job completed: its whole timeline (context and filled frames), canonical space.
		TFunction<void(const anymole::Clip&)> OnResult;
		// The server's error verbatim, with the field it names.
		TFunction<void(const FText&)> OnError;
		TFunction<void(const std::vector<anymole::JobSummary>&)> OnJobs;
	};

	FAnyMoLeFillTask(const anymole::SessionOptions& Options, FHandlers InHandlers);

	// Only the handshake: what the server offers (the panel's health line, methods and presets).
	void StartHandshake();
	// The server's jobs whose client_tags hold all of `Tags` (OnJobs).
	void StartListJobs(std::map<std::string, std::string> Tags);
	// Uploads `Character` (sent once: the server caches it by content hash) and runs `Request`. The job carries
	// `Request.client_tags`, so that a restarted editor finds it again.
	void StartFill(anymole::CharacterAsset Character, anymole::JobRequest Request);
	// Follows a job submitted before a restart, replaying its events without the old previews.
	void StartReattach(const FString& JobId);
	// Asks the server to cancel the job; its Cancelled event ends the task.
	void Cancel();
	// Stops following without cancelling (the panel closes; the job runs on).
	void Detach();

private:
	void Launch(TUniqueFunction<void()> Work);
	void Post(TUniqueFunction<void()> Work) const;
	bool Fail(const anymole::Status& Status) const;
	void Follow(const std::string& JobId, bool bSkipPreviews);

	anymole::Session Session;
	FHandlers Handlers;
	FCriticalSection Lock;
	std::string JobId;  // guarded by Lock
	bool bCancelRequested = false;  // guarded by Lock
};
