// Test fixtures: the real Python server as a child process on a loopback port, the Python reference helper, and
// protobuf fixture files. Paths are relative to the repository root (ctest runs there).
#pragma once

#include <sys/types.h>

#include <string>
#include <thread>
#include <vector>

#include "AnyMoLe/Types.h"

namespace anymole::testing {

// The interpreter that runs the server and the helper: $ANYMOLE_PYTHON, else .venv/bin/python.
std::string Python();
std::string ReadFile(const std::string& path);
void WriteFile(const std::string& path, const std::string& data);
// A fresh directory under the build tree's tmp/.
std::string TempDir(const std::string& name);
// Runs `python ARGS...` (e.g. "-m", "anymole.cli", ...); true when it exited 0.
bool RunPython(const std::vector<std::string>& args);
// Runs `python unreal_plugin/tests/python_reference.py ARGS...`; true when it exited 0.
bool RunReference(const std::vector<std::string>& args);
// The bundled character files (assets/*.glb, *.fbx, *.bvh), sorted.
std::vector<std::string> BundledAssets();
// The folder where `python_reference.py export` wrote the server's own import of a bundled asset (all of them
// are exported by the first call, in one process): character.pb and <clip>.clip.pb files.
std::string ExportDir(const std::string& asset);
CharacterAsset ReadCharacter(const std::string& path);
Clip ReadClip(const std::string& path);

// `anymole serve --port 0 --device cpu` in a child process; stderr goes to `<data_dir>.log`.
class ServerProcess {
public:
    ~ServerProcess();
    // Starts the server on `data_dir` with extra arguments; false when it exited before listening.
    bool Start(const std::string& data_dir, const std::vector<std::string>& extra = {});
    // SIGTERM (jobs still running are interrupted after the grace period) and wait.
    void Stop();
    std::string Target() const { return "127.0.0.1:" + std::to_string(port_); }
    int port() const { return port_; }

private:
    pid_t pid_ = -1;
    int port_ = 0;
    std::thread drain_;
};

}  // namespace anymole::testing
