#include "EngineBridge.h"

#include "Animation/AnimData/IAnimationDataController.h"
#include "Animation/AnimData/IAnimationDataModel.h"
#include "Animation/AnimSequence.h"
#include "Engine/SkeletalMesh.h"
#include "Engine/Texture2D.h"
#include "ImageUtils.h"
#include "Materials/MaterialInterface.h"
#include "ReferenceSkeleton.h"
#include "Rendering/SkeletalMeshLODRenderData.h"
#include "Rendering/SkeletalMeshRenderData.h"
#include "ScopedTransaction.h"

#define LOCTEXT_NAMESPACE "AnyMoLe"

namespace AnyMoLeEditor
{
anymole::ue::Transform ToCore(const FTransform& T)
{
	const FQuat Q = T.GetRotation();
	const FVector P = T.GetTranslation();
	const FVector S = T.GetScale3D();
	anymole::ue::Transform Out;
	Out.Rotation = {Q.X, Q.Y, Q.Z, Q.W};
	Out.Translation = {P.X, P.Y, P.Z};
	Out.Scale3D = {S.X, S.Y, S.Z};
	return Out;
}

FTransform ToEngine(const anymole::ue::Transform& T)
{
	return FTransform(FQuat(T.Rotation.X, T.Rotation.Y, T.Rotation.Z, T.Rotation.W),
		FVector(T.Translation.X, T.Translation.Y, T.Translation.Z), FVector(T.Scale3D.X, T.Scale3D.Y, T.Scale3D.Z));
}

FString ToFString(const std::string& Utf8) { return FString(UTF8_TO_TCHAR(Utf8.c_str())); }

std::string ToStd(const FString& Text) { return std::string(TCHAR_TO_UTF8(*Text)); }

FText ToText(const anymole::Status& Status) { return FText::FromString(ToFString(Status.ToString())); }

static anymole::ue::SkeletonUe ReadSkeleton(const FReferenceSkeleton& Ref)
{
	anymole::ue::SkeletonUe Sk;
	const TArray<FTransform>& Pose = Ref.GetRawRefBonePose();
	for (int32 B = 0; B < Ref.GetRawBoneNum(); ++B)
	{
		Sk.names.push_back(ToStd(Ref.GetBoneName(B).ToString()));
		Sk.parents.push_back(Ref.GetRawParentIndex(B));  // INDEX_NONE (-1) for the root, as the contract
		Sk.ref_pose.push_back(ToCore(Pose[B]));
	}
	return Sk;
}

// A material slot's base colour factor ("BaseColor" vector parameter) and texture ("BaseColorTexture", else the
// first texture the material samples), encoded as PNG. The parameter names are a convention of the imported
// glTF / FBX materials; other materials send light grey.
static void ReadMaterial(const FSkeletalMaterial& Slot, anymole::SkinnedMesh& Mesh)
{
	anymole::Material Out;
	Out.name = ToStd(Slot.MaterialSlotName.ToString());
	const UMaterialInterface* Material = Slot.MaterialInterface;
	if (Material)
	{
		FLinearColor Color;
		if (Material->GetVectorParameterValue(FHashedMaterialParameterInfo(TEXT("BaseColor")), Color))
		{
			Out.base_color = {Color.R, Color.G, Color.B, Color.A};
		}
		UTexture* Texture = nullptr;
		if (!Material->GetTextureParameterValue(FHashedMaterialParameterInfo(TEXT("BaseColorTexture")), Texture))
		{
			TArray<UTexture*> Used;
			Material->GetUsedTextures(Used, EMaterialQualityLevel::High, true, ERHIFeatureLevel::SM5, true);
			Texture = Used.Num() ? Used[0] : nullptr;
		}
		// FImageUtils::GetTexture2DSourceImage / CompressImage (UE 5.1+; not in the verified notes).
		FImage Image;
		TArray64<uint8> Png;
		if (UTexture2D* Tex2D = Cast<UTexture2D>(Texture);
			Tex2D && FImageUtils::GetTexture2DSourceImage(Tex2D, Image) && FImageUtils::CompressImage(Png, TEXT("png"), Image))
		{
			Out.texture = static_cast<int32_t>(Mesh.textures.size());
			Mesh.textures.push_back(anymole::Texture{"image/png", std::string(reinterpret_cast<const char*>(Png.GetData()), Png.Num())});
		}
	}
	Mesh.materials.push_back(std::move(Out));
}

bool ReadCharacter(const USkeletalMesh& Mesh, anymole::CharacterAsset& Out, FText& OutError)
{
	const FReferenceSkeleton& Ref = Mesh.GetRefSkeleton();
	const anymole::ue::SkeletonUe Sk = ReadSkeleton(Ref);
	anymole::Status St = anymole::ue::SkeletonFromUnreal(Sk, &Out.skeleton);
	if (!St.ok())
	{
		OutError = ToText(St);
		return false;
	}
	Out.name = ToStd(Mesh.GetName());

	const FSkeletalMeshRenderData* RenderData = Mesh.GetResourceForRendering();
	Out.has_mesh = RenderData && RenderData->LODRenderData.Num() > 0;
	if (!Out.has_mesh)
	{
		return true;  // skeleton only: the server draws a stick figure
	}
	const FSkeletalMeshLODRenderData& Lod = RenderData->LODRenderData[0];
	const FSkinWeightVertexBuffer& Weights = Lod.SkinWeightVertexBuffer;
	const uint32 NumVerts = Lod.GetNumVertices();
	const uint32 K = Weights.GetMaxBoneInfluences();
	anymole::ue::MeshUe M;
	M.influences_per_vertex = K;
	for (uint32 V = 0; V < NumVerts; ++V)
	{
		const FVector3f& P = Lod.StaticVertexBuffers.PositionVertexBuffer.VertexPosition(V);
		M.positions.push_back({P.X, P.Y, P.Z});
		const FVector4f N = Lod.StaticVertexBuffers.StaticMeshVertexBuffer.VertexTangentZ(V);
		M.normals.push_back({N.X, N.Y, N.Z});
		const FVector2f UV = Lod.StaticVertexBuffers.StaticMeshVertexBuffer.GetVertexUV(V, 0);
		M.uvs.push_back(UV.X);
		M.uvs.push_back(UV.Y);
		// Skin bone indices are section-local: the section's bone map gives the skeleton's bone.
		int32 Section = 0, InSection = 0;
		Lod.GetSectionFromVertexIndex(V, Section, InSection);
		const TArray<FBoneIndexType>& BoneMap = Lod.RenderSections[Section].BoneMap;
		for (uint32 I = 0; I < K; ++I)
		{
			M.joint_indices.push_back(BoneMap[Weights.GetBoneIndex(V, I)]);
			M.joint_weights.push_back(Weights.GetBoneWeight(V, I) / 65535.f);  // uint16 in 5.3, 8-bit expanded
		}
	}
	const FRawStaticIndexBuffer16or32Interface* Indices = Lod.MultiSizeIndexContainer.GetIndexBuffer();
	for (const FSkelMeshRenderSection& Section : Lod.RenderSections)
	{
		for (uint32 T = 0; T < Section.NumTriangles; ++T)
		{
			for (uint32 C = 0; C < 3; ++C)
			{
				M.triangle_indices.push_back(Indices->Get(Section.BaseIndex + 3 * T + C));
			}
			M.triangle_materials.push_back(Section.MaterialIndex);
		}
	}
	// Inverse bind matrices: the inverse of each bone's component-space bind transform.
	const TArray<FTransform>& Pose = Ref.GetRawRefBonePose();
	TArray<FTransform> Global;
	Global.SetNum(Pose.Num());
	for (int32 B = 0; B < Pose.Num(); ++B)
	{
		const int32 Parent = Ref.GetRawParentIndex(B);
		Global[B] = Parent == INDEX_NONE ? Pose[B] : Pose[B] * Global[Parent];
		const FMatrix Inv = Global[B].ToMatrixWithScale().Inverse();
		anymole::ue::Matrix Flat;
		for (int32 R = 0; R < 4; ++R)
		{
			for (int32 C = 0; C < 4; ++C)
			{
				Flat[R * 4 + C] = Inv.M[R][C];
			}
		}
		M.inverse_bind_matrices.push_back(Flat);
	}
	St = anymole::ue::MeshFromUnreal(M, &Out.mesh);
	for (const FSkeletalMaterial& Slot : Mesh.GetMaterials())
	{
		ReadMaterial(Slot, Out.mesh);
	}
	if (!St.ok())
	{
		OutError = ToText(St);
		return false;
	}
	return true;
}

bool ReadMotion(UAnimSequence& Sequence, const FReferenceSkeleton& Ref, anymole::ue::MotionUe& Out, FText& OutError)
{
	const IAnimationDataModel* Model = Sequence.GetDataModel();
	if (!Model || Model->GetNumberOfKeys() == 0)
	{
		OutError = LOCTEXT("NoKeys", "The sequence has no keys.");
		return false;
	}
	const int32 N = Ref.GetRawBoneNum();
	const int32 NumKeys = Model->GetNumberOfKeys();
	TArray<FName> Tracks;
	Model->GetBoneTrackNames(Tracks);
	const TArray<FTransform>& Pose = Ref.GetRawRefBonePose();
	Out.fps = Model->GetFrameRate().AsDecimal();
	Out.frame_count = static_cast<uint32_t>(NumKeys);
	Out.num_joints = static_cast<size_t>(N);
	Out.keys.assign(size_t(NumKeys) * N, anymole::ue::Transform{});
	for (int32 B = 0; B < N; ++B)
	{
		TArray<FTransform> Keys;
		if (Tracks.Contains(Ref.GetBoneName(B)))
		{
			Model->GetBoneTrackTransforms(Ref.GetBoneName(B), Keys);
		}
		for (int32 F = 0; F < NumKeys; ++F)
		{
			// A bone without a track holds its bind pose: a key is the full evaluated pose of every bone.
			Out.keys[size_t(F) * N + B] = ToCore(Keys.IsValidIndex(F) ? Keys[F] : Pose[B]);
		}
	}
	return true;
}

bool WriteResult(UAnimSequence& Sequence, const FReferenceSkeleton& Ref, const anymole::Clip& Result, int32 FirstFrame,
	const TSet<int32>& Keep, FText& OutError)
{
	anymole::Skeleton Rest;
	const anymole::Status St = anymole::ue::SkeletonFromUnreal(ReadSkeleton(Ref), &Rest);
	if (!St.ok())
	{
		OutError = ToText(St);
		return false;
	}
	const anymole::ue::MotionUe Filled = anymole::ue::ClipToUnreal(Result, Rest);
	const IAnimationDataModel* Model = Sequence.GetDataModel();
	const int32 N = Ref.GetRawBoneNum();
	const int32 Frames = static_cast<int32>(Result.frame_count);
	TArray<FName> Tracks;
	Model->GetBoneTrackNames(Tracks);
	const TArray<FTransform>& Pose = Ref.GetRawRefBonePose();

	// One transaction: undo restores the sequence's keys and length as they were.
	FScopedTransaction Transaction(LOCTEXT("FillTransaction", "Fill In-betweens with AnyMoLe"));
	Sequence.Modify();
	IAnimationDataController& Controller = Sequence.GetController();
	IAnimationDataController::FScopedBracket Bracket(Controller, LOCTEXT("FillBracket", "AnyMoLe fill"));
	const int32 NeededKeys = FirstFrame + Frames;
	if (NeededKeys > Model->GetNumberOfKeys())
	{
		Controller.SetNumberOfFrames(FFrameNumber(NeededKeys - 1));  // frames = keys - 1
	}
	const int32 NumKeys = Model->GetNumberOfKeys();
	for (int32 B = 0; B < N; ++B)
	{
		const FName Name = Ref.GetBoneName(B);
		TArray<FTransform> Old;
		if (Tracks.Contains(Name))
		{
			Model->GetBoneTrackTransforms(Name, Old);
		}
		else
		{
			Controller.AddBoneCurve(Name);
		}
		TArray<FVector> Positions;
		TArray<FQuat> Rotations;
		TArray<FVector> Scales;
		for (int32 F = 0; F < NumKeys; ++F)
		{
			const FTransform Before = Old.IsValidIndex(F) ? Old[F] : (Old.Num() ? Old.Last() : Pose[B]);
			const int32 T = F - FirstFrame;
			if (T >= 0 && T < Frames && !Keep.Contains(F))
			{
				// Keys on the sequence's frame grid: timeline frame T is sequence frame FirstFrame + T.
				const FTransform Key = ToEngine(Filled.Key(static_cast<uint32_t>(T), static_cast<size_t>(B)));
				Positions.Add(Key.GetTranslation());
				Rotations.Add(Key.GetRotation());
				Scales.Add(Before.GetScale3D());  // the contract carries no scale: keep the bone's own
			}
			else
			{
				Positions.Add(Before.GetTranslation());
				Rotations.Add(Before.GetRotation());
				Scales.Add(Before.GetScale3D());
			}
		}
		if (!Controller.SetBoneTrackKeys(Name, Positions, Rotations, Scales))
		{
			Transaction.Cancel();
			OutError = FText::Format(LOCTEXT("KeysRefused", "Unreal refused the keys of bone {0}."), FText::FromName(Name));
			return false;
		}
	}
	Controller.NotifyPopulated();
	Sequence.MarkPackageDirty();
	return true;
}
}  // namespace AnyMoLeEditor

#undef LOCTEXT_NAMESPACE
