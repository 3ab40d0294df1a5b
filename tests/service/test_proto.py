"""The contract's tooling: committed stubs are fresh, `buf lint` (STANDARD + COMMENTS) passes."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STUBS = ROOT / "server" / "anymole" / "wire" / "proto"
BUF = ROOT / ".tools" / "node_modules" / ".bin" / "buf"


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pinned(dist: str) -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    pins = [m.group(1) for d in deps if (m := re.fullmatch(rf"{re.escape(dist)}==(\S+)", d))]
    assert pins, f"pyproject.toml's dev extra must pin {dist} exactly (the stubs carry its version stamp)"
    return pins[0]


def test_generator_and_runtime_pins_agree_with_the_committed_stubs():
    # The stubs refuse a grpcio older than the generator that wrote them: the runtime floor must be that version,
    # so that no grpcio the package admits fails to import them, whatever the registry serves tomorrow.
    tools = _pinned("grpcio-tools")
    stamp = re.search(
        r"GRPC_GENERATED_VERSION = '([^']+)'", (STUBS / "anymole" / "v1" / "anymole_pb2_grpc.py").read_text()
    )
    assert stamp is not None and stamp.group(1) == tools
    runtime = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"grpcio>={tools}" in runtime


def test_committed_stubs_match_a_fresh_generation(tmp_path):
    for dist in ("grpcio-tools", "mypy-protobuf"):
        installed, pinned = importlib.metadata.version(dist), _pinned(dist)
        assert installed == pinned, (
            f"{dist} {installed} installed, stubs pinned to {pinned}: run scripts/setup.sh --dev"
        )
    gen = _load_generator()
    written = gen.generate(tmp_path)
    assert any(p.name == "anymole_pb2_grpc.pyi" for p in written)
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(
        p.relative_to(STUBS) for p in STUBS.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    )
    assert fresh == committed, "stub files differ: run `.venv/bin/python scripts/gen_proto.py`"
    stale = [str(r) for r in fresh if (tmp_path / r).read_bytes() != (STUBS / r).read_bytes()]
    assert not stale, f"stale stubs {stale}: run `.venv/bin/python scripts/gen_proto.py` and commit"


def test_generated_imports_point_into_our_package():
    text = (STUBS / "anymole" / "v1" / "anymole_pb2_grpc.py").read_text()
    assert "from anymole.wire.proto.anymole.v1 import anymole_pb2" in text
    assert "from anymole.v1 import" not in text


@pytest.mark.skipif(not BUF.exists(), reason="buf missing: run `bash scripts/setup.sh --dev`")
def test_buf_lint_passes():
    res = subprocess.run([str(BUF), "lint"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.skipif(not BUF.exists(), reason="buf missing: run `bash scripts/setup.sh --dev`")
def test_buf_lint_catches_an_undocumented_field(tmp_path):
    # The COMMENTS rules are what enforce "every field documented"; prove they bite on a copy.
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(ROOT / "proto", tmp_path / "proto")
    proto = tmp_path / "proto" / "anymole" / "v1" / "anymole.proto"
    text = proto.read_text()
    proto.write_text(text.replace("  // The job to cancel.\n", "", 1))
    res = subprocess.run([str(BUF), "lint"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    assert 'Field "job_id" should have a non-empty comment' in res.stdout


# The commit whose version.py says (1, 0): the first released contract, which every 1.x must stay compatible with.
V1_0_COMMIT = "496b2b5502b8c3bdf1845ad0e5bbc41f699bb432"


def _v1_0_module(tmp_path: Path) -> Path:
    """The v1.0 contract (buf.yaml and its .proto files) written under ``tmp_path`` from git history."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("the breaking-change check reads v1.0 from git history; run it in a git checkout")
    listed = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", V1_0_COMMIT, "--", "proto", "buf.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    version = subprocess.run(
        ["git", "show", f"{V1_0_COMMIT}:server/anymole/service/version.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout
    assert "PROTOCOL_VERSION: tuple[int, int] = (1, 0)" in version
    for name in listed:
        out = tmp_path / name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(
            subprocess.run(
                ["git", "show", f"{V1_0_COMMIT}:{name}"], cwd=ROOT, capture_output=True, check=True
            ).stdout
        )
    return tmp_path


@pytest.mark.skipif(not BUF.exists(), reason="buf missing: run `bash scripts/setup.sh --dev`")
def test_buf_breaking_against_v1_0_passes(tmp_path):
    against = _v1_0_module(tmp_path / "v1.0")
    res = subprocess.run(
        [str(BUF), "breaking", "--against", str(against)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.skipif(not BUF.exists(), reason="buf missing: run `bash scripts/setup.sh --dev`")
def test_buf_breaking_catches_a_renumbered_field(tmp_path):
    against = _v1_0_module(tmp_path / "v1.0")
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(ROOT / "proto", tmp_path / "proto")
    proto = tmp_path / "proto" / "anymole" / "v1" / "anymole.proto"
    proto.write_text(
        proto.read_text().replace(
            "  string job_id = 1;\n}\n\n// Response of CancelJob.",
            "  string job_id = 9;\n}\n\n// Response of CancelJob.",
            1,
        )
    )
    res = subprocess.run(
        [str(BUF), "breaking", "--against", str(against)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode != 0
    assert "CancelJobRequest" in res.stdout


def test_vendored_google_rpc_protos_define_what_python_decodes_with(tmp_path):
    # proto/google/rpc is what other languages generate the error details from; Python decodes them with
    # googleapis-common-protos. Both must agree on every message, field name, number and type.
    import grpc_tools
    from google.protobuf import descriptor_pb2
    from google.rpc import code_pb2, error_details_pb2, status_pb2
    from grpc_tools import protoc

    wkt = Path(grpc_tools.__file__).parent / "_proto"
    out = tmp_path / "rpc.binpb"
    names = ["google/rpc/status.proto", "google/rpc/error_details.proto", "google/rpc/code.proto"]
    assert (
        protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"-I{wkt}", f"--descriptor_set_out={out}", *names]) == 0
    )
    vendored = {f.name: f for f in descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file}

    def shape(f: descriptor_pb2.FileDescriptorProto) -> dict:
        def msg(m):
            return {
                "fields": sorted((x.name, x.number, x.type, x.type_name) for x in m.field),
                "nested": {n.name: msg(n) for n in m.nested_type},
            }

        return {
            "package": f.package,
            "messages": {m.name: msg(m) for m in f.message_type},
            "enums": {e.name: sorted((v.name, v.number) for v in e.value) for e in f.enum_type},
        }

    for module, name in zip((status_pb2, error_details_pb2, code_pb2), names, strict=True):
        installed = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(installed)
        assert shape(vendored[name]) == shape(installed), (
            f"proto/{name} differs from googleapis-common-protos"
        )
