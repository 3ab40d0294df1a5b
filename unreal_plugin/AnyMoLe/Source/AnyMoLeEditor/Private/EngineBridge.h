// Engine types in and out of the core's engine-free mirrors (AnyMoLe/UnrealSpace.h does the space conversion).
#pragma once

#include "CoreMinimal.h"

#include "AnyMoLe/Types.h"
#include "AnyMoLe/UnrealSpace.h"

class UAnimSequence;
class USkeletalMesh;
struct FReferenceSkeleton;

namespace AnyMoLeEditor
{
anymole::ue::Transform ToCore(const FTransform& T);
FTransform ToEngine(const anymole::ue::Transform& T);
FString ToFString(const std::string& Utf8);
std::string ToStd(const FString& Text);
// A core status as text for the user: the server's message verbatim, with the field it names.
FText ToText(const anymole::Status& Status);

// The reference skeleton and the LOD0 mesh of `Mesh` in canonical space: positions, normals, UVs, skin weights
// mapped through each section's bone map, inverse bind matrices, and each section's material (base colour
// and texture).
bool ReadCharacter(const USkeletalMesh& Mesh, anymole::CharacterAsset& Out, FText& OutError);

// Every key of `Sequence` for every bone of `RefSkeleton`, in its order (bones without a track keep their bind
// pose), in Unreal space.
bool ReadMotion(UAnimSequence& Sequence, const FReferenceSkeleton& RefSkeleton, anymole::ue::MotionUe& Out, FText& OutError);

// Writes the filled frames of `Result` (a job's timeline, canonical space) into `Sequence`, timeline frame i at
// sequence frame FirstFrame + i, in one undoable transaction. Frames listed in `Keep` (the context and the
// keys) are left as they are; missing bone tracks are added and scale keys filled from the track or with 1.
bool WriteResult(UAnimSequence& Sequence, const FReferenceSkeleton& RefSkeleton, const anymole::Clip& Result,
	int32 FirstFrame, const TSet<int32>& Keep, FText& OutError);
}
