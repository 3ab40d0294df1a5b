// Every gRPC / protobuf include of the core goes through here, and only .cpp files include it. Inside Unreal,
// THIRD_PARTY_INCLUDES_START/END silence the engine's warnings-as-errors for third-party code and
// `check` / `verify` (AssertionMacros.h) are pushed away, because gRPC and abseil use those identifiers; Pre/PostWindowsApi keep
// Windows macros out of gRPC's way.
#pragma once

#if defined(THIRD_PARTY_INCLUDES_START)
#define ANYMOLE_IN_UNREAL 1
THIRD_PARTY_INCLUDES_START
#pragma push_macro("check")
#pragma push_macro("verify")
#undef check
#undef verify
#if PLATFORM_WINDOWS
#include "Windows/PreWindowsApi.h"
#endif
#endif

#include <grpcpp/grpcpp.h>

#include "anymole/v1/anymole.grpc.pb.h"
#include "anymole/v1/anymole.pb.h"

#if defined(ANYMOLE_IN_UNREAL)
#if PLATFORM_WINDOWS
#include "Windows/PostWindowsApi.h"
#endif
#pragma pop_macro("verify")
#pragma pop_macro("check")
THIRD_PARTY_INCLUDES_END
#endif
