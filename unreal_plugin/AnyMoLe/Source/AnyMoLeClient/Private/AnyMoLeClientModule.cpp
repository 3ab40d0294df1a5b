// Inside Unreal only: the module object of the core (it has no start-up work). The CMake build leaves this out.
#include "Modules/ModuleManager.h"

IMPLEMENT_MODULE(FDefaultModuleImpl, AnyMoLeClient)
