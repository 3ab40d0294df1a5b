"""`AdaptationCache` under concurrent writers and readers of one key (threads: ``flock`` locks are per open
file, so threads of one process contend like processes do)."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from pathlib import Path

import pytest

from anymole.errors import ModelUnavailable
from anymole.video.cache import WEIGHTS_FILE, AdaptationCache


class FilePrior:
    """The cache's side of `VideoPrior`: weights are ``payload`` bytes, the JSON holds their SHA-256, and a load
    checks the two agree, so a half-written or mixed entry cannot pass for a good one."""

    def __init__(self, payload: bytes = b"", between_files: threading.Event | None = None) -> None:
        self.payload = payload
        self.loaded: bytes | None = None
        self.between_files = between_files  # a load waits for it after reading the weights
        self.weights_read = threading.Event()

    def save_adapted(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)  # as DynamiCrafterPrior.save_adapted
        with open(path, "wb") as f:
            for i in range(0, len(self.payload), 4096):  # many writes: a reader could catch it half done
                f.write(self.payload[i : i + 4096])
        Path(f"{path}.json").write_text(json.dumps({"sha256": hashlib.sha256(self.payload).hexdigest()}))

    def load_adapted(self, path: Path) -> None:
        try:
            data = path.read_bytes()
            self.weights_read.set()
            if self.between_files is not None:
                self.between_files.wait(timeout=10)
            meta = json.loads(Path(f"{path}.json").read_text())
        except FileNotFoundError as exc:
            raise ModelUnavailable("file-prior", f"entry vanished while loading: {exc}") from exc
        if hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise ModelUnavailable("file-prior", "weights and their JSON are from different writes")
        self.loaded = data


def _payload(seed: int) -> bytes:
    return bytes([seed % 251]) * (64 * 1024 + seed)


def _entries(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


@pytest.mark.timeout(60)
def test_concurrent_puts_and_loads_of_one_key_always_see_a_complete_entry(tmp_path) -> None:
    cache = AdaptationCache(tmp_path)
    payloads = {_payload(w) for w in range(3)}
    cache.put("k", FilePrior(_payload(0)))
    errors: list[BaseException] = []
    reads: list[bytes | None] = []
    start = threading.Barrier(6)

    def writer(w: int) -> None:
        start.wait()
        try:
            for _ in range(40):
                cache.put("k", FilePrior(_payload(w)))
        except BaseException as exc:  # every failure is collected and asserted on
            errors.append(exc)

    def reader() -> None:
        start.wait()
        try:
            for _ in range(80):
                prior = FilePrior()
                assert "k" in cache and cache.load_into("k", prior)
                reads.append(prior.loaded)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    threads += [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(reads) == 240 and set(reads) <= payloads
    # Superseded entries are collected: one link and the one directory it points to.
    cache.put("k", FilePrior(_payload(1)))
    names = _entries(tmp_path / "k")
    assert _entries(tmp_path) == ["k"] and len(names) == 2 and names[0].startswith(".adapted-") and names[1] == "current"
    final = FilePrior()
    assert cache.load_into("k", final) and final.loaded == _payload(1)


@pytest.mark.timeout(30)
def test_an_entry_being_read_outlives_its_replacement(tmp_path) -> None:
    cache = AdaptationCache(tmp_path)
    cache.put("k", FilePrior(_payload(0)))
    gate = threading.Event()
    slow = FilePrior(between_files=gate)
    outcome: list[object] = []
    t = threading.Thread(target=lambda: outcome.append(cache.load_into("k", slow)))
    t.start()
    assert slow.weights_read.wait(timeout=10)
    # The reader is between its two files: replace the entry twice meanwhile.
    cache.put("k", FilePrior(_payload(1)))
    cache.put("k", FilePrior(_payload(2)))
    gate.set()
    t.join()
    assert outcome == [True] and slow.loaded == _payload(0)
    fresh = FilePrior()
    assert cache.load_into("k", fresh) and fresh.loaded == _payload(2)
    cache.put("k", FilePrior(_payload(3)))  # the old entry, no longer read, is collected now
    assert len(_entries(tmp_path / "k")) == 2


def test_entries_of_the_previous_layout_are_read_then_replaced(tmp_path) -> None:
    FilePrior(_payload(5)).save_adapted(tmp_path / "k" / WEIGHTS_FILE)  # as written before entries were links
    cache = AdaptationCache(tmp_path)
    prior = FilePrior()
    assert "k" in cache and cache.load_into("k", prior) and prior.loaded == _payload(5)
    cache.put("k", FilePrior(_payload(6)))
    names = _entries(tmp_path / "k")
    assert len(names) == 2 and names[0].startswith(".adapted-") and names[1] == "current"
    assert cache.load_into("k", prior) and prior.loaded == _payload(6)


def test_a_dead_writers_directory_is_collected_and_other_files_are_left_alone(tmp_path) -> None:
    cache = AdaptationCache(tmp_path)
    cache.put("k", FilePrior(_payload(0)))
    folder = tmp_path / "k"
    entry = next(p for p in folder.iterdir() if p.name.startswith(".adapted-"))
    crashed = folder / ".adapted-killed"  # a writer killed mid-save: never linked, nobody holds it
    shutil.copytree(entry, crashed)
    (folder / ".other").mkdir()
    (folder / "notes.txt").write_text("x")
    cache.put("j", FilePrior(_payload(1)))  # another key's write leaves k alone
    assert crashed.is_dir()
    cache.put("k", FilePrior(_payload(2)))
    assert not crashed.exists() and not entry.exists()  # superseded and dead: both collected
    assert {".other", "notes.txt", "current"} <= set(_entries(folder)) and len(_entries(folder)) == 4
    prior = FilePrior()
    assert cache.load_into("k", prior) and prior.loaded == _payload(2) and "j" in cache


def test_a_failed_put_leaves_nothing_and_keeps_the_entry_it_replaces(tmp_path) -> None:
    cache = AdaptationCache(tmp_path)

    class Full(FilePrior):
        def save_adapted(self, path: Path) -> None:
            path.write_bytes(b"half")
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        cache.put("k", Full())
    assert "k" not in cache and _entries(tmp_path) == []
    cache.put("k", FilePrior(_payload(0)))
    with pytest.raises(OSError, match="No space"):
        cache.put("k", Full())
    prior = FilePrior()
    assert cache.load_into("k", prior) and prior.loaded == _payload(0) and len(_entries(tmp_path / "k")) == 2


@pytest.mark.timeout(30)
def test_a_broken_entry_is_a_miss_and_the_next_put_replaces_it(tmp_path) -> None:
    cache = AdaptationCache(tmp_path)
    cache.put("k", FilePrior(_payload(0)))
    shutil.rmtree((tmp_path / "k" / "current").resolve())  # deleted by hand: the link dangles
    assert "k" not in cache and not cache.load_into("k", FilePrior())
    cache.put("k", FilePrior(_payload(1)))
    ((tmp_path / "k" / "current").resolve() / WEIGHTS_FILE).unlink()  # its weights lost (a crash, say)
    assert not cache.load_into("k", FilePrior())
    cache.put("k", FilePrior(_payload(2)))
    prior = FilePrior()
    assert cache.load_into("k", prior) and prior.loaded == _payload(2) and len(_entries(tmp_path / "k")) == 2
