// Inside Unreal only: compiles the stubs AnyMoLeClient.Build.cs generated into Intermediate/AnyMoLeProto (UBT
// compiles only files under the module folder). The CMake build compiles them directly and leaves this out.
#include "GrpcIncludes.h"

THIRD_PARTY_INCLUDES_START
#pragma push_macro("check")
#pragma push_macro("verify")
#undef check
#undef verify
#if defined(_MSC_VER)
#pragma warning(disable : 4018 4065 4146 4244 4251 4267 4305 4307 4309 4334 4355 4506 4800 4996 4125)
#endif
#include "anymole/v1/anymole.pb.cc"
#include "anymole/v1/anymole.grpc.pb.cc"
#pragma pop_macro("verify")
#pragma pop_macro("check")
THIRD_PARTY_INCLUDES_END
