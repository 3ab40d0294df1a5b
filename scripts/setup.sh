#!/usr/bin/env bash
# Set up AnyMoLe Bridge on Debian 12 / Ubuntu: system libraries, a virtual environment in .venv, the package.
#   bash scripts/setup.sh          runtime only (server, CLI, offline demo)
#   bash scripts/setup.sh --dev    + test tools: pytest, ruff, mypy, Ray, Blender and the glTF validator, buf, the
#                                    C++ toolchain of the Unreal plugin's core (cmake, gRPC, GoogleTest)
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DEV=0
[[ "${1:-}" == "--dev" ]] && DEV=1

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

PY=${PYTHON:-python3}
if ! $PY -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    say "Python >= 3.11 is needed, found: $($PY --version 2>&1). Run again with PYTHON=/path/to/python3.11"
    exit 1
fi

# --- system packages ---------------------------------------------------------------------------------------
APT_PKGS=(libassimp5 libegl1 libegl-mesa0 libgl1-mesa-dri)
# Debian's own python3 creates virtual environments only with python3-venv installed.
$PY -c "import ensurepip, venv" 2>/dev/null || APT_PKGS+=(python3-venv)
if [[ $DEV == 1 ]]; then
    APT_PKGS+=(blender python3-numpy nodejs npm)  # Blender's glTF importer needs the system numpy
    # The Unreal plugin's C++ core and its GoogleTest suites (scripts/test_unreal.sh).
    APT_PKGS+=(cmake g++ libgrpc++-dev protobuf-compiler protobuf-compiler-grpc libgtest-dev)
fi
if [[ $DEV == 1 ]]; then
    # The Unity package's C# core (scripts/test_unity.sh): mono's compiler and NUnit, protoc for the C# messages;
    # Google.Protobuf itself is built from Debian's protobuf source package (deb-src) by that script.
    APT_PKGS+=(mono-complete nunit-console protobuf-compiler)
fi
missing=()
for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node/npm may come from elsewhere than Debian (nodesource, nvm): accept any working binary.
if command -v npm >/dev/null; then missing=("${missing[@]/npm}"); missing=("${missing[@]/nodejs}"); fi
read -r -a missing <<<"${missing[*]:-}"
if (( ${#missing[@]} )); then
    say "installing system packages: ${missing[*]}"
    SUDO=""; [[ $(id -u) != 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq
    # With recommends: Blender's headless importers rely on some of them (as tested).
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- python ------------------------------------------------------------------------------------------------
if [[ ! -x .venv/bin/python ]]; then
    say "creating .venv with $($PY --version)"
    $PY -m venv .venv
fi
# --dev adds Ray (the `ray` extra) so that the scale-out tests run (tests/service/test_ray.py).
EXTRA=""; [[ $DEV == 1 ]] && EXTRA="[dev,ray]"
say "installing anymole$EXTRA (torch 2.13.0 CPU wheel unless a CUDA torch is already present)"
# Pin torch explicitly: an unpinned torch pulls a multi-GB CUDA build.
if .venv/bin/python -c "import torch" 2>/dev/null; then TORCH=(); else TORCH=("torch==2.13.0"); fi
.venv/bin/python -m pip install -q --disable-pip-version-check "${TORCH[@]}" -e ".$EXTRA"

# --- dev tools from npm (validator for our GLB files, buf for proto lint) -----------------------------------
if [[ $DEV == 1 ]]; then
    if [[ ! -x .tools/node_modules/.bin/buf || ! -d .tools/node_modules/gltf-validator ]]; then
        say "installing gltf-validator and @bufbuild/buf into .tools/"
        mkdir -p .tools
        npm install --silent --no-audit --no-fund --prefix .tools gltf-validator @bufbuild/buf >/dev/null
    fi
fi
say "done. Try: .venv/bin/anymole --help"
