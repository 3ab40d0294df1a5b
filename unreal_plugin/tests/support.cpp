#include "support.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "ProtoConvert.h"

namespace anymole::testing {

std::string Python() {
    const char* env = std::getenv("ANYMOLE_PYTHON");
    return env && *env ? env : ".venv/bin/python";
}

std::string ReadFile(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

void WriteFile(const std::string& path, const std::string& data) {
    std::ofstream(path, std::ios::binary) << data;
}

std::string TempDir(const std::string& name) {
    const char* env = std::getenv("ANYMOLE_TEST_TMP");
    const std::filesystem::path root = env && *env ? env : std::filesystem::temp_directory_path() / "anymole-ue";
    const std::filesystem::path dir = root / (name + "-" + std::to_string(getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    return dir.string();
}

static int Spawn(const std::vector<std::string>& argv, int stderr_fd) {
    const pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);  // a crashed test binary leaves no server behind
        if (stderr_fd >= 0) dup2(stderr_fd, 2);
        std::vector<char*> args;
        for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        execvp(args[0], args.data());
        _exit(127);
    }
    return pid;
}

bool RunReference(const std::vector<std::string>& args) {
    std::vector<std::string> argv{"unreal_plugin/tests/python_reference.py"};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunPython(argv);
}

bool RunPython(const std::vector<std::string>& args) {
    std::vector<std::string> argv{Python()};
    argv.insert(argv.end(), args.begin(), args.end());
    const pid_t pid = Spawn(argv, -1);
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

std::vector<std::string> BundledAssets() {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator("assets")) {
        const std::string ext = e.path().extension().string();
        if (ext == ".glb" || ext == ".fbx" || ext == ".bvh") out.push_back(e.path().string());
    }
    std::sort(out.begin(), out.end());
    return out;
}

std::string ExportDir(const std::string& asset) {
    static const std::string root = [] {
        const std::string dir = TempDir("export");
        std::vector<std::string> args{"export", dir};
        for (const auto& a : BundledAssets()) args.push_back(a);
        RunReference(args);
        return dir;
    }();
    return root + "/" + std::filesystem::path(asset).filename().string();
}

CharacterAsset ReadCharacter(const std::string& path) {
    ::anymole::v1::CharacterAsset msg;
    msg.ParseFromString(ReadFile(path));
    return proto::FromProto(msg);
}

Clip ReadClip(const std::string& path) {
    ::anymole::v1::Clip msg;
    msg.ParseFromString(ReadFile(path));
    return proto::FromProto(msg);
}

ServerProcess::~ServerProcess() { Stop(); }

bool ServerProcess::Start(const std::string& data_dir, const std::vector<std::string>& extra) {
    int fds[2];
    if (pipe(fds) != 0) return false;
    std::vector<std::string> argv{Python(), "-m", "anymole.cli", "serve", "--port", "0", "--data-dir", data_dir,
                                  "--device", "cpu"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    pid_ = Spawn(argv, fds[1]);
    close(fds[1]);
    FILE* err = fdopen(fds[0], "r");
    const std::regex listening(R"(anymole listening on 127\.0\.0\.1:(\d+))");
    std::ofstream log(data_dir + ".log");
    char line[4096];
    while (port_ == 0 && fgets(line, sizeof line, err)) {
        log << line;
        std::cmatch m;
        if (std::regex_search(line, m, listening)) port_ = std::stoi(m[1]);
    }
    log.close();
    // Keep reading stderr so the server never blocks on a full pipe.
    drain_ = std::thread([err, path = data_dir + ".log"] {
        std::ofstream out(path, std::ios::app);
        char buf[4096];
        while (fgets(buf, sizeof buf, err)) out << buf;
        fclose(err);
    });
    return port_ != 0;
}

void ServerProcess::Stop() {
    if (pid_ > 0) {
        kill(pid_, SIGTERM);
        int status = 0;
        waitpid(pid_, &status, 0);
        pid_ = -1;
    }
    if (drain_.joinable()) drain_.join();
    port_ = 0;
}

}  // namespace anymole::testing
