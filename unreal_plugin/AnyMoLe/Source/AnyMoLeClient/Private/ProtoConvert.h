// The one place that sees both the generated protobuf types and the plain types of AnyMoLe/Types.h.
#pragma once

#include "AnyMoLe/Types.h"
#include "GrpcIncludes.h"

namespace anymole::proto {

namespace pb = ::anymole::v1;

void ToProto(const Skeleton& in, pb::Skeleton* out);
void ToProto(const CharacterAsset& in, pb::CharacterAsset* out);
void ToProto(const Clip& in, pb::Clip* out);
void ToProto(const JobRequest& in, pb::InbetweenRequest* out);

Skeleton FromProto(const pb::Skeleton& in);
CharacterAsset FromProto(const pb::CharacterAsset& in);
Clip FromProto(const pb::Clip& in);
ServerInfo FromProto(const pb::GetServerInfoResponse& in);
JobEvent FromProto(const pb::JobEvent& in);
JobSummary FromProto(const pb::JobSummary& in);
MotionChunk FromProto(const pb::MotionChunk& in);

// A finished call's status: code and message verbatim, and the field of its first BadRequest violation.
Status FromGrpc(const grpc::Status& status);

}  // namespace anymole::proto
