"""Crash isolation: the native import runs in a child process, so a segfault in libassimp cannot take the
server down.

The child is a plain ``python -m anymole.io._worker`` subprocess (not `multiprocessing`, whose spawn mode
re-imports the caller's ``__main__`` and so breaks scripts without a main guard). It is started on first
use and reused; requests and replies are pickles over its stdin/stdout. A crash, a timeout or any other
failed exchange discards it (killed and waited for), and the next import starts a fresh one.
"""

from __future__ import annotations

import os
import pickle
import selectors
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from anymole.errors import AssetError, ModelUnavailable

__all__ = ["DEFAULT_IMPORT_TIMEOUT_S", "read_scene", "run_isolated", "shutdown_worker"]

DEFAULT_IMPORT_TIMEOUT_S = 120.0

_lock = threading.Lock()  # one request at a time per worker; the pipe protocol is strictly call/reply
_proc: subprocess.Popen[bytes] | None = None
_owner = 0  # pid of the process that started _proc


def _worker() -> subprocess.Popen[bytes]:
    global _proc, _owner
    if _owner != os.getpid():  # a forked copy of this module must not share its parent's pipes
        _proc, _owner = None, os.getpid()
    if _proc is None or _proc.poll() is not None:
        env = dict(os.environ)
        # The child must import this same anymole, also when it runs from a source checkout.
        src = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join([src, env["PYTHONPATH"]]) if env.get("PYTHONPATH") else src
        _proc = subprocess.Popen(
            [sys.executable, "-m", "anymole.io._worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
    return _proc


def _discard_locked() -> None:
    global _proc
    proc, _proc = _proc, None
    if proc is None:
        return
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


def shutdown_worker() -> None:
    """Stop the import worker, if one runs (the next import starts a new one)."""
    with _lock:
        _discard_locked()


def run_isolated(
    path: str | Path, fn: Callable[..., Any], *args: Any, timeout: float = DEFAULT_IMPORT_TIMEOUT_S
) -> Any:
    """Call the module-level function ``fn(*args)`` in the worker process and return its pickled result.

    Raises:
        AssetError: naming ``path`` when the worker dies (segfault, abort, out of memory) or runs past
            ``timeout`` seconds. Exceptions raised by ``fn`` itself are re-raised here.
    """
    with _lock:
        proc = _worker()
        assert proc.stdin is not None and proc.stdout is not None  # both are pipes by construction
        try:
            pickle.dump((fn, args), proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            proc.stdin.flush()
            with selectors.DefaultSelector() as sel:
                sel.register(proc.stdout, selectors.EVENT_READ)
                ready = bool(sel.select(timeout))
            if ready:
                ok, value = pickle.load(proc.stdout)
        except (EOFError, BrokenPipeError, pickle.UnpicklingError):
            _discard_locked()
            raise AssetError(
                path,
                "the importer crashed while reading this file (libassimp died in the import worker; the server "
                "is unaffected). The file is probably malformed or uses a feature assimp 5.2 cannot read: "
                "re-export it, e.g. from Blender as glTF 2.0 (.glb)",
            ) from None
        except BaseException:
            # Any other failure mid-exchange (a reply that does not unpickle here, an interrupt) leaves the
            # rest of this reply in the pipe, where it would answer the next request: start afresh.
            _discard_locked()
            raise
        if not ready:
            _discard_locked()
            raise AssetError(path, f"the importer did not finish within {timeout:g} s; the file may be huge or malformed")
    if not ok:
        raise value
    return value


def _import_in_child(path: str) -> tuple[str, Any]:
    """Worker entry: ``("ok", RawScene)`` or ``(kind, message)``; our exceptions carry no pickling support."""
    from anymole.io import _assimp

    try:
        return "ok", _assimp.import_scene(path)
    except _assimp.LibraryMismatch as exc:
        return "library", str(exc)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        return "file", str(exc)


def read_scene(path: str | Path, timeout: float = DEFAULT_IMPORT_TIMEOUT_S) -> Any:
    """Import ``path`` with libassimp in the worker; returns an `anymole.io._assimp.RawScene`.

    Raises:
        AssetError: assimp rejected or crashed on the file.
        ModelUnavailable: libassimp/pyassimp is missing or of a version whose struct layout is unverified.
    """
    kind, payload = run_isolated(path, _import_in_child, str(Path(path).resolve()), timeout=timeout)
    if kind == "library":
        raise ModelUnavailable("libassimp", payload)
    if kind == "file":
        raise AssetError(path, f"assimp could not read it: {payload}")
    return payload
