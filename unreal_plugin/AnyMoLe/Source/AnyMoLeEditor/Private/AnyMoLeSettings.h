// Where the AnyMoLe server is: Project Settings > Plugins > AnyMoLe, stored per user (not in the project's
// shared config), because the token is a secret.
#pragma once

#include "CoreMinimal.h"
#include "Engine/DeveloperSettings.h"

#include "AnyMoLeSettings.generated.h"

UCLASS(config = EditorPerProjectUserSettings, meta = (DisplayName = "AnyMoLe"))
class UAnyMoLeSettings : public UDeveloperSettings
{
	GENERATED_BODY()

public:
	// HOST:PORT of the server (`anymole serve --port 50051`).
	UPROPERTY(config, EditAnywhere, Category = "Server")
	FString ServerAddress = TEXT("127.0.0.1:50051");

	// Bearer token, when the server was started with --token.
	UPROPERTY(config, EditAnywhere, Category = "Server", meta = (PasswordField = true))
	FString Token;

	// PEM root certificate of a TLS server (`anymole serve --tls-cert`); empty for plain text on a trusted network.
	UPROPERTY(config, EditAnywhere, Category = "Server", meta = (FilePathFilter = "pem"))
	FFilePath CaFile;

	virtual FName GetCategoryName() const override { return TEXT("Plugins"); }
};
