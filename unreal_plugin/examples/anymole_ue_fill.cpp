// anymole-ue-fill: the Unreal plugin's core on the command line, for comparing with `anymole fill` on any file.
//
//   anymole-ue-fill --server HOST:PORT CHARACTER_FILE --motion clip.json --context A:B --keys i,j
//                   [--method interp] [--preset P] [--token T] --out result.json
//
// It uploads the character file (.glb, .fbx, .bvh; the server imports it), reads the clip (motion JSON
// "anymole.motion.v1" in canonical space: fps, joint_names, rotations F x J x 4, root_translations F x 3,
// optional translations F x J x 3, as `anymole convert ASSET --out clip.json` writes it),
// converts the clip to Unreal space and takes the context and keys from there through the plugin's own
// conversion (AnyMoLe/UnrealSpace.h), as the editor does from a sequence, fills, and writes the result
// timeline (clip frames A .. last key) in the same format, as `anymole fill --out result.json` does.
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <charconv>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "AnyMoLe/Session.h"
#include "AnyMoLe/UnrealSpace.h"

namespace {

using google::protobuf::Struct;
using google::protobuf::Value;

// The motion JSON of `anymole fill --out result.json` and `anymole convert --out clip.json`
// (server/anymole/wire/motion_json.py).
const char kFormat[] = "anymole.motion.v1";

int Fail(const std::string& message) {
    std::cerr << "anymole-ue-fill: " << message << "\n";
    return 1;
}

bool ReadFile(const std::string& path, std::string* out) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return false;
    std::ostringstream s;
    s << in.rdbuf();
    *out = s.str();
    return true;
}

// Flattens nested JSON arrays of numbers (F x J x 4 and the like) into `out`.
void Flatten(const Value& v, std::vector<float>* out) {
    if (v.kind_case() == Value::kNumberValue) {
        out->push_back(static_cast<float>(v.number_value()));
    } else if (v.kind_case() == Value::kListValue) {
        for (const Value& item : v.list_value().values()) Flatten(item, out);
    }
}

// A float as the shortest text that reads back to the same float, always with a '.' or an exponent so that every
// JSON reader takes it for a float (Python's json would read "-0" as the integer 0 and lose the sign).
std::string Number(float v) {
    char buf[32];
    const auto end = std::to_chars(buf, buf + sizeof buf, v).ptr;
    std::string text(buf, end);
    if (text.find_first_of(".en") == std::string::npos) text += ".0";  // "n": inf and nan stay as they are
    return text;
}

// `flat` as nested JSON lists of `shape`, e.g. {F, J, 4}.
void WriteNested(std::ostream& out, const float* flat, const std::vector<size_t>& shape, size_t dim = 0) {
    size_t stride = 1;
    for (size_t d = dim + 1; d < shape.size(); ++d) stride *= shape[d];
    out << '[';
    for (size_t i = 0; i < shape[dim]; ++i) {
        if (i) out << ',';
        if (dim + 1 == shape.size()) {
            out << Number(flat[i]);
        } else {
            WriteNested(out, flat + i * stride, shape, dim + 1);
        }
    }
    out << ']';
}

std::string Quoted(const std::string& s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (static_cast<unsigned char>(c) < 0x20) {
            char esc[8];
            std::snprintf(esc, sizeof esc, "\\u%04x", c);
            out += esc;
        } else {
            out += c;
        }
    }
    return out + '"';
}

bool ParseRange(const std::string& text, uint32_t* a, uint32_t* b) {
    return std::sscanf(text.c_str(), "%u:%u", a, b) == 2 && *a < *b;
}

std::vector<uint32_t> ParseKeys(const std::string& text) {
    std::vector<uint32_t> keys;
    std::stringstream s(text);
    std::string part;
    while (std::getline(s, part, ',')) keys.push_back(static_cast<uint32_t>(std::stoul(part)));
    return keys;
}

}  // namespace

int main(int argc, char** argv) {
    std::map<std::string, std::string> opt{{"--method", "interp"}};
    std::string character_file;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a.rfind("--", 0) == 0) {
            if (i + 1 >= argc) return Fail(a + " needs a value");
            opt[a] = argv[++i];
        } else {
            character_file = a;
        }
    }
    for (const char* required : {"--server", "--motion", "--context", "--keys", "--out"}) {
        if (!opt.count(required)) return Fail(std::string("missing ") + required + " (see the header of anymole_ue_fill.cpp)");
    }
    if (character_file.empty()) return Fail("give the CHARACTER_FILE (.glb, .fbx or .bvh)");
    uint32_t a = 0, b = 0;
    if (!ParseRange(opt["--context"], &a, &b)) return Fail("--context: give A:B with A < B");
    std::vector<uint32_t> keys;
    for (char c : opt["--keys"]) {
        if (!(std::isdigit(static_cast<unsigned char>(c)) || c == ',')) return Fail("--keys: give frames like 60,82");
    }
    keys = ParseKeys(opt["--keys"]);

    std::string bytes, json;
    if (!ReadFile(character_file, &bytes)) return Fail("cannot read " + character_file);
    if (!ReadFile(opt["--motion"], &json)) return Fail("cannot read " + opt["--motion"]);
    Struct clip_json;
    if (!google::protobuf::util::JsonStringToMessage(json, &clip_json).ok()) return Fail(opt["--motion"] + " is not JSON");
    const auto& f = clip_json.fields();
    if (!f.count("format") || f.at("format").string_value() != kFormat) {
        return Fail(opt["--motion"] + ": \"format\" must be \"" + kFormat + "\" (anymole convert ASSET --out clip.json)");
    }
    for (const char* field : {"fps", "joint_names", "rotations", "root_translations"}) {
        if (!f.count(field)) return Fail(opt["--motion"] + " has no \"" + field + "\"");
    }

    const std::string ext = character_file.substr(character_file.find_last_of('.') + 1);
    const anymole::CharacterFormat format = ext == "glb" ? anymole::CharacterFormat::Glb
                                            : ext == "fbx" ? anymole::CharacterFormat::Fbx
                                            : ext == "bvh" ? anymole::CharacterFormat::Bvh
                                                           : anymole::CharacterFormat::Proto;
    if (format == anymole::CharacterFormat::Proto) return Fail("CHARACTER_FILE must end in .glb, .fbx or .bvh");

    anymole::SessionOptions options;
    options.target = opt["--server"];
    options.token = opt["--token"];
    options.client_name = "anymole-ue-fill";
    anymole::Session session(options);
    anymole::UploadResult up;
    anymole::Status st = session.Handshake(nullptr);
    if (st.ok()) st = session.Upload(bytes, format, "", &up);
    if (!st.ok()) return Fail(st.ToString());

    std::vector<std::string> names;
    for (const Value& v : f.at("joint_names").list_value().values()) names.push_back(v.string_value());
    if (names != up.skeleton.joint_names) return Fail("the clip's joint_names differ from the server's import of " + character_file);
    anymole::Clip clip;
    clip.fps = static_cast<float>(f.at("fps").number_value());
    Flatten(f.at("rotations"), &clip.rotations);
    Flatten(f.at("root_translations"), &clip.root_translations);
    if (f.count("translations")) Flatten(f.at("translations"), &clip.translations);
    const size_t j = names.size();
    clip.frame_count = static_cast<uint32_t>(clip.root_translations.size() / 3);
    if (clip.rotations.size() != clip.frame_count * j * 4) return Fail("rotations is not F x J x 4");
    if (b > clip.frame_count || keys.empty() || keys.front() < b || keys.back() >= clip.frame_count) {
        return Fail("--context/--keys: give A:B and increasing keys >= B within the clip's " +
                    std::to_string(clip.frame_count) + " frames");
    }

    // Through Unreal space, as the editor reads a sequence.
    const anymole::ue::MotionUe motion = anymole::ue::ClipToUnreal(clip, up.skeleton);
    const bool translations = !clip.translations.empty();
    anymole::ue::MotionUe context = motion;
    context.frame_count = b - a;
    context.keys.assign(motion.keys.begin() + a * j, motion.keys.begin() + b * j);
    anymole::JobRequest request;
    request.character_id = up.character_id;
    request.method = opt["--method"];
    request.preset = opt["--preset"];
    request.label = "anymole-ue-fill " + character_file;
    st = anymole::ue::ClipFromUnreal(context, translations, &request.context);
    for (uint32_t k : keys) {
        anymole::Keyframe key;
        if (st.ok()) st = anymole::ue::KeyframeFromUnreal(motion, k, k - a, translations, &key);
        request.keyframes.push_back(key);
    }
    if (!st.ok()) return Fail(st.ToString());

    std::string job;
    st = session.Submit(request, &job);
    if (!st.ok()) return Fail(st.ToString());
    anymole::JobEvent last;
    st = session.Follow(job, 0, [&last](const anymole::JobEvent& e) {
        if (e.kind == anymole::JobEvent::Kind::Progress) {
            std::cerr << "\r" << e.stage << " " << static_cast<int>(100 * e.fraction) << "%   " << std::flush;
        }
        last = e;
        return true;
    }, 3);
    std::cerr << "\n";
    if (!st.ok()) return Fail(st.ToString());
    if (last.kind != anymole::JobEvent::Kind::Completed) {
        return Fail("job " + job + " ended: " + (last.failed_field.empty() ? "" : last.failed_field + ": ") + last.message);
    }
    anymole::Result result;
    st = session.DownloadResult(job, &result);
    if (!st.ok()) return Fail(st.ToString());

    const size_t frames = result.motion.frame_count;
    std::ofstream out(opt["--out"], std::ios::binary);
    out << "{\"format\": \"" << kFormat << "\", \"fps\": " << Number(result.motion.fps) << ", \"joint_names\": [";
    for (size_t i = 0; i < names.size(); ++i) out << (i ? ", " : "") << Quoted(names[i]);
    out << "], \"rotations\": ";
    WriteNested(out, result.motion.rotations.data(), {frames, j, 4});
    out << ", \"root_translations\": ";
    WriteNested(out, result.motion.root_translations.data(), {frames, 3});
    if (!result.motion.translations.empty()) {
        out << ", \"translations\": ";
        WriteNested(out, result.motion.translations.data(), {frames, j, 3});
    }
    out << "}\n";
    out.close();
    if (!out) return Fail("cannot write " + opt["--out"]);
    std::cerr << "wrote " << opt["--out"] << ": " << frames << " frames (job " << job << ")\n";
    return 0;
}
