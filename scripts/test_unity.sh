#!/usr/bin/env bash
# Build the Unity package's engine-free C# core under mono and run its NUnit tests against a live server.
#   bash scripts/test_unity.sh            ends with one line: 'C#: N passed, N failed'
# Needs Debian's mono-complete and nunit-console (scripts/setup.sh --dev) and the repository's .venv.
# Google.Protobuf has no NuGet feed here: it is built once from Debian's protobuf source package into
# ${XDG_CACHE_HOME:-~/.cache}/anymole/unity (a few seconds; later runs reuse it). Everything else is built
# into build/unity/. The live tests start scripts/unity_relay.py, which starts a real server in-process.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/build/unity
PROTOBUF_VERSION=3.21.12
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/anymole/unity/protobuf-$PROTOBUF_VERSION
PY=${ANYMOLE_PYTHON:-$ROOT/.venv/bin/python}
NUNIT=$(ls /usr/lib/cli/nunit.framework-2.6*/nunit.framework.dll 2>/dev/null | tail -n 1)

fail() {  # a build step failed: say which, and still print the summary line scripts/test.sh reads
    echo "test_unity: $*" >&2
    echo "C#: 0 passed, 1 failed"
    exit 1
}
for tool in mcs mono nunit-console protoc ilasm; do
    command -v $tool >/dev/null || fail "$tool is missing: run bash scripts/setup.sh --dev (mono-complete, nunit-console, protobuf-compiler)"
done

# --- Google.Protobuf from Debian's source package (cached) ----------------------------------------------------
if [[ ! -f $CACHE/Google.Protobuf.dll ]]; then
    # Built in a scratch folder and moved in at the end (the DLL last), so a concurrent run never sees half of it.
    mkdir -p "$CACHE"
    work=$(mktemp -d "$CACHE.build.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    ( cd "$work" && apt-get source --download-only protobuf >/dev/null 2>&1 ) \
        || fail "apt-get source protobuf failed: enable deb-src in /etc/apt/sources.list.d and run apt-get update"
    tar -xzf "$work"/protobuf_$PROTOBUF_VERSION.orig.tar.gz -C "$work" \
        "protobuf-$PROTOBUF_VERSION/csharp/src/Google.Protobuf" || fail "cannot unpack the protobuf $PROTOBUF_VERSION sources"
    src=$work/protobuf-$PROTOBUF_VERSION/csharp/src/Google.Protobuf
    # mcs resolves `using static SourceCodeInfo.Types` before Descriptor.cs's own `pb` alias exists; a type
    # alias for the one name those two files take from it avoids the compiler bug.
    sed -i 's/^using static Google.Protobuf.Reflection.SourceCodeInfo.Types;/using Location = Google.Protobuf.Reflection.SourceCodeInfo.Types.Location;/' \
        "$src/Reflection/DescriptorDeclaration.cs" "$src/Reflection/FileDescriptor.cs"
    # mono keeps System.Runtime.CompilerServices.Unsafe internal: a five-method IL shim supplies it.
    ilasm /dll /quiet /out:"$work/System.Runtime.CompilerServices.Unsafe.dll" scripts/unity/Unsafe.il >/dev/null \
        || fail "ilasm could not build the Unsafe shim"
    mcs -target:library -langversion:latest -unsafe -optimize+ -nowarn:1591,0618,0612,0436,0219,0414 \
        -out:"$work/Google.Protobuf.dll" -r:System.Numerics.dll -r:"$work/System.Runtime.CompilerServices.Unsafe.dll" \
        $(find "$src" -name '*.cs') >"$work/build.log" 2>&1 \
        || { tail -20 "$work/build.log" >&2; fail "Google.Protobuf did not build"; }
    mv "$work/System.Runtime.CompilerServices.Unsafe.dll" "$CACHE/"
    mv "$work/Google.Protobuf.dll" "$CACHE/"
fi

# --- the package's core, its tests, the relay transport ------------------------------------------------------
rm -rf "$OUT" && mkdir -p "$OUT/gen" "$OUT/fixtures"
cp "$CACHE"/*.dll "$OUT/"
protoc -Iproto --csharp_out="$OUT/gen" proto/anymole/v1/anymole.proto || fail "protoc failed on proto/anymole/v1"
CORE=$(find unity_plugin/Runtime/Core -name '*.cs')
mcs -target:library -langversion:7.2 -nowarn:1591 -out:"$OUT/AnyMoLe.Core.dll" -r:"$OUT/Google.Protobuf.dll" \
    $CORE >"$OUT/build.log" 2>&1 || { cat "$OUT/build.log" >&2; fail "the core did not compile"; }
SAMPLE=unity_plugin/Samples~/CommandLine
mcs -target:exe -langversion:7.2 -out:"$OUT/AnyMoLeFill.exe" -r:"$OUT/AnyMoLe.Core.dll" -r:"$OUT/Google.Protobuf.dll" \
    -r:System.Web.Extensions.dll "$SAMPLE"/*.cs >>"$OUT/build.log" 2>&1 \
    || { cat "$OUT/build.log" >&2; fail "the command-line example did not compile"; }
mcs -target:library -langversion:7.2 -out:"$OUT/AnyMoLe.Tests.dll" \
    -r:"$OUT/AnyMoLe.Core.dll" -r:"$OUT/Google.Protobuf.dll" -r:"$NUNIT" -r:System.Numerics.dll -r:System.Web.Extensions.dll \
    $(find unity_plugin/Tests/Editor tests/unity -name '*.cs') "$SAMPLE/RelayTransport.cs" >>"$OUT/build.log" 2>&1 \
    || { cat "$OUT/build.log" >&2; fail "the tests did not compile"; }

# The transport and the editor need grpc-dotnet and UnityEditor, which do not exist here: parse them at least.
mcs --parse -langversion:7.2 $(find unity_plugin/Runtime/Transport unity_plugin/Editor -name '*.cs') >>"$OUT/build.log" 2>&1 \
    || { cat "$OUT/build.log" >&2; fail "unity_plugin/Editor or Runtime/Transport does not parse"; }

# --- what the tests compare against: the Python side's imports and the Python client's fill -----------------
PYTHONPATH=$ROOT/server "$PY" scripts/unity_fixtures.py "$OUT/fixtures" >"$OUT/fixtures.log" 2>&1 \
    || { tail -20 "$OUT/fixtures.log" >&2; fail "scripts/unity_fixtures.py failed"; }

# --- run ---------------------------------------------------------------------------------------------------
export ANYMOLE_REPO=$ROOT ANYMOLE_UNITY_BUILD=$OUT ANYMOLE_PYTHON=$PY ANYMOLE_RELAY=$ROOT/scripts/unity_relay.py
export PYTHONPATH=$ROOT/server
( cd "$OUT" && nunit-console -nologo -labels -xml="$OUT/TestResult.xml" "$OUT/AnyMoLe.Tests.dll" ) >"$OUT/nunit.log" 2>&1
rc=$?
grep -E '^\*\*\*\*\*|Tests run|^[0-9]+\) |at AnyMoLe|Expected|But was|  [A-Za-z].*Exception' "$OUT/nunit.log" | grep -v '^\*\*\*\*\*' | head -80
[[ -f $OUT/TestResult.xml ]] || { tail -30 "$OUT/nunit.log" >&2; fail "nunit-console wrote no results"; }
# Count test cases, not suites: each executed case is a Success, a Failure or an Error.
read -r passed failed < <("$PY" - "$OUT/TestResult.xml" <<'EOF'
import sys, xml.etree.ElementTree as ET
results = [c.get("result") for c in ET.parse(sys.argv[1]).getroot().iter("test-case") if c.get("executed") == "True"]
print(results.count("Success"), sum(r in ("Failure", "Error") for r in results))
EOF
)
echo "C#: $passed passed, $failed failed"
(( rc == 0 && failed == 0 )) || exit 1
