"""`BackbonePool` (issue 14.4): the estimator's frozen ViTs read from weight files once and shared by the jobs
after, a few at a time, a replaced file read anew. Tiny ViTs in the published layouts stand in for the weights."""

from __future__ import annotations

import concurrent.futures
import threading
from pathlib import Path

import pytest
import torch

from anymole.errors import JobCancelled, ModelUnavailable
from anymole.estimator import EstimatorConfig, backbones
from anymole.pipeline import CancelToken
from anymole.pipeline.pool import BackbonePool
from vit_folders import random_vit, write_models_folder

PAIR = ("dinov2_vitb14_reg", "fit3d_vits14_reg")


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The backbone names read from disk, in order."""
    seen: list[str] = []
    load = backbones.pretrained_vit

    def counted(name: str, path: object) -> object:
        seen.append(name)
        return load(name, path)

    monkeypatch.setattr(backbones, "pretrained_vit", counted)
    return seen


def _config(models: Path, **kw: object) -> EstimatorConfig:
    weights = (str(models / "dinov2-with-registers-base"), str(models / "fit3d-vits14-reg" / "dinov2_reg_small_finetuned.pth"))
    return EstimatorConfig.fast(weights=weights, **kw)  # type: ignore[arg-type]


def test_each_backbone_is_read_once_kept_a_few_at_a_time_and_read_again_when_replaced(tmp_path, loads) -> None:
    models = write_models_folder(tmp_path / "models", random_vit(1), random_vit(2))
    cfg = _config(models)
    pool = BackbonePool(capacity=2)
    dino, fit3d = (pool.get(b, cfg, "cpu") for b in PAIR)
    assert pool.get(PAIR[0], _config(models), "cpu") is dino and pool.get(PAIR[1], cfg, "cpu") is fit3d
    assert loads == list(PAIR) and len(pool) == 2
    assert not any(p.requires_grad for p in fit3d.parameters())

    images = torch.rand(1, 3, 64, 96)
    coarse = pool.get(PAIR[1], _config(models, feature_stride=16), "cpu")  # another grid: another module
    assert coarse is not fit3d and coarse(images).shape == (1, fit3d.channels, 4, 6)
    assert len(pool) == 2 and loads == [*PAIR, PAIR[1]]
    assert pool.get(PAIR[1], cfg, "cpu") is fit3d  # the most recently used of the first two stayed
    assert pool.get(PAIR[0], cfg, "cpu") is not dino and loads[-1] == PAIR[0]  # the least recently used went

    # FiT3D's file replaced by other weights: the next job reads it again
    before = fit3d(images)
    other = write_models_folder(tmp_path / "other", random_vit(3), random_vit(4))
    target = models / "fit3d-vits14-reg" / "dinov2_reg_small_finetuned.pth"
    target.write_bytes((other / "fit3d-vits14-reg" / "dinov2_reg_small_finetuned.pth").read_bytes())
    replaced = pool.get(PAIR[1], cfg, "cpu")
    assert replaced is not fit3d and loads[-1] == PAIR[1]
    assert not torch.allclose(replaced(images), before)

    pool.clear()
    assert len(pool) == 0


def test_a_failed_load_keeps_nothing_and_the_next_get_reads_the_mended_file(tmp_path, loads) -> None:
    models = write_models_folder(tmp_path / "models", random_vit(1), random_vit(2))
    target = models / "fit3d-vits14-reg" / "dinov2_reg_small_finetuned.pth"
    good = target.read_bytes()
    torch.save({"pos_embed": torch.zeros(1, 4, 7)}, target)  # a 7-wide ViT: no architecture it could be
    pool = BackbonePool()
    with pytest.raises(ModelUnavailable, match="7-wide"):  # the server's file: FAILED_PRECONDITION
        pool.get(PAIR[1], _config(models), "cpu")
    assert len(pool) == 0
    target.write_bytes(good)
    assert pool.get(PAIR[1], _config(models), "cpu").channels == 32 and len(pool) == 1
    with pytest.raises(ValueError, match="not a frozen backbone"):
        pool.get("conv", _config(models), "cpu")


def test_a_slow_load_is_shared_by_the_jobs_that_want_it_and_holds_up_no_other(tmp_path, monkeypatch) -> None:
    """Two threads want the same backbone while it loads slowly: it is built once and both get it; meanwhile a
    backbone loaded before is handed out at once (before: the pool's lock was held through the load, so every
    other job waited for it). A failed load reaches every thread that waited for it and keeps nothing."""
    from anymole.pipeline import pool as pool_module

    models = write_models_folder(tmp_path / "models", random_vit(1), random_vit(2))
    cfg = _config(models)
    started, release = threading.Event(), threading.Event()
    builds: list[str] = []
    fail = False

    def slow_build(name: str, config: EstimatorConfig) -> torch.nn.Module:
        builds.append(name)
        if name == PAIR[0]:
            started.set()
            assert release.wait(30), "the test never released the load"
            if fail:
                raise RuntimeError("unexpected EOF in the checkpoint")
        return torch.nn.Linear(2, 2)

    waiting = threading.Semaphore(0)  # released by each thread that waits for another's load

    class Watched(concurrent.futures.Future):  # the pool's per-load future
        def result(self, timeout: float | None = None) -> torch.nn.Module:
            waiting.release()
            return super().result(timeout)

    monkeypatch.setattr(pool_module, "build_backbone", slow_build)
    monkeypatch.setattr(concurrent.futures, "Future", Watched)  # the executor below makes its own (_base.Future)
    pool = BackbonePool()
    fit3d = pool.get(PAIR[1], cfg, "cpu")
    with concurrent.futures.ThreadPoolExecutor(2) as threads:
        first = threads.submit(pool.get, PAIR[0], cfg, "cpu")
        assert started.wait(30)
        second = threads.submit(pool.get, PAIR[0], cfg, "cpu")
        assert waiting.acquire(timeout=30)  # the second thread waits for the first one's load
        assert pool.get(PAIR[1], cfg, "cpu") is fit3d  # while the other one loads
        assert not first.done() and not second.done()
        release.set()
        assert first.result(30) is second.result(30)
    assert builds == [PAIR[1], PAIR[0]] and len(pool) == 2

    fail, builds[:] = True, []
    started.clear(), release.clear()
    pool.clear()
    with concurrent.futures.ThreadPoolExecutor(2) as threads:
        first = threads.submit(pool.get, PAIR[0], cfg, "cpu")
        assert started.wait(30)
        second = threads.submit(pool.get, PAIR[0], cfg, "cpu")
        assert waiting.acquire(timeout=30)
        release.set()
        for job in (first, second):
            with pytest.raises(ModelUnavailable, match="unexpected EOF"):
                job.result(30)
    assert builds == [PAIR[0]] and len(pool) == 0
    fail = False
    assert isinstance(pool.get(PAIR[0], cfg, "cpu"), torch.nn.Linear) and builds == [PAIR[0], PAIR[0]]


class _Watched(CancelToken):
    """A job's cancel token that says when its job first checks it (the job is then waiting)."""

    def __init__(self) -> None:
        super().__init__()
        self.checked = threading.Event()

    def raise_if_cancelled(self) -> None:
        self.checked.set()
        super().raise_if_cancelled()


def test_a_job_waiting_for_another_jobs_load_stops_when_cancelled_and_the_load_serves_its_own_job(
    tmp_path, monkeypatch
) -> None:
    """A job waits for the backbone another job is loading; cancelled, it ends with `JobCancelled` while the load
    still runs (before: it waited for the whole load, seconds for a ViT-B, whatever its token said), and the load
    completes for the job that started it and stays for the next ones, read once."""
    from anymole.pipeline import pool as pool_module

    models = write_models_folder(tmp_path / "models", random_vit(1), random_vit(2))
    cfg = _config(models)
    started, release = threading.Event(), threading.Event()
    builds: list[str] = []

    def slow_build(name: str, config: EstimatorConfig) -> torch.nn.Module:
        builds.append(name)
        started.set()
        assert release.wait(30), "the test never released the load"
        return torch.nn.Linear(2, 2)

    monkeypatch.setattr(pool_module, "build_backbone", slow_build)
    pool = BackbonePool()
    loader, waiter = CancelToken(), _Watched()
    with concurrent.futures.ThreadPoolExecutor(2) as threads:
        first = threads.submit(pool.get, PAIR[0], cfg, "cpu", loader)
        assert started.wait(30)
        second = threads.submit(pool.get, PAIR[0], cfg, "cpu", waiter)
        assert waiter.checked.wait(30)  # the second job waits for the first one's load
        waiter.cancel("cancelled by a client")
        with pytest.raises(JobCancelled, match="cancelled by a client"):
            second.result(30)
        assert not first.done() and not release.is_set()  # it ended while the load went on
        release.set()
        module = first.result(30)
    assert isinstance(module, torch.nn.Linear) and not loader.cancelled
    assert pool.get(PAIR[0], cfg, "cpu") is module and builds == [PAIR[0]] and len(pool) == 1
