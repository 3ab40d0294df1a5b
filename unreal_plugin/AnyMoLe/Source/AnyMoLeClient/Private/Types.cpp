#include "AnyMoLe/Types.h"

namespace anymole {

const char* StatusCodeName(StatusCode code) {
    static const char* const kNames[] = {
        "OK",        "CANCELLED",        "UNKNOWN",           "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
        "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
        "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
    };
    const int i = static_cast<int>(code);
    return i >= 0 && i < 17 ? kNames[i] : "UNKNOWN";
}

std::string Status::ToString() const {
    if (ok()) return "OK";
    std::string out = StatusCodeName(code);
    out += ": ";
    if (!field.empty()) out += field + ": ";
    return out + message;
}

const MethodInfo* ServerInfo::FindMethod(const std::string& name) const {
    for (const MethodInfo& m : methods) {
        if (m.name == name) return &m;
    }
    return nullptr;
}

}  // namespace anymole
