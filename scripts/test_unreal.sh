#!/usr/bin/env bash
# Build the Unreal plugin's engine-free C++ core (unreal_plugin/) with CMake into build/unreal, then run its
# GoogleTest suites through ctest: conversions, and the core's Session against the real Python server, which the
# tests start themselves on loopback ports (`anymole serve --port 0`). Ends with one line
# 'C++: N passed, N failed' (scripts/test.sh adds it to the total); exits non-zero on any failure.
#   bash scripts/test_unreal.sh
# Needs Debian's cmake, g++, libgrpc++-dev, protobuf-compiler-grpc, libgtest-dev (scripts/setup.sh --dev).
set -uo pipefail
cd "$(dirname "$0")/.."

BUILD=${ANYMOLE_UNREAL_BUILD:-build/unreal}
export ANYMOLE_PYTHON=${ANYMOLE_PYTHON:-$PWD/.venv/bin/python}
export PYTHONPATH="$PWD/server${PYTHONPATH:+:$PYTHONPATH}"
ANYMOLE_TEST_TMP=$(mktemp -d); export ANYMOLE_TEST_TMP
trap 'rm -rf "$ANYMOLE_TEST_TMP"' EXIT

if ! cmake -S unreal_plugin -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null \
    || ! cmake --build "$BUILD" -j "$(nproc)"; then
    echo "C++ build failed (see above)"
    echo "C++: 0 passed, 1 failed"
    exit 1
fi

rm -rf "$BUILD/reports"
ctest --test-dir "$BUILD" --output-on-failure
rc=$?

# Count test cases from each suite's GoogleTest report; a suite that wrote none (it crashed) counts as one failure.
"$ANYMOLE_PYTHON" - "$BUILD" <<'PY'
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

build = Path(sys.argv[1])
passed = failed = 0
expected = {"anymole_conversion_tests", "anymole_replay_tests", "anymole_session_tests"}
for name in sorted(expected):
    report = build / "reports" / f"{name}.xml"
    if not report.exists():
        print(f"{name} wrote no report (crashed or did not start)")
        failed += 1
        continue
    for case in ET.parse(report).iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        elif case.find("skipped") is None and case.get("result", "completed") == "completed":
            passed += 1
print(f"C++: {passed} passed, {failed} failed")
PY
[[ $rc == 0 ]]
