"""The captioning model is loaded once per (model id, device) and process (the real model cannot be downloaded
here: the loader is replaced by a counting fake)."""

from __future__ import annotations

import threading

import pytest
import torch

from anymole.video import caption
from anymole.video.caption import scene_caption, template_caption


class _Inputs(dict):
    def to(self, device: torch.device) -> _Inputs:
        return _Inputs({k: v.to(device) for k, v in self.items()})


class FakeProcessor:
    def __call__(self, images, return_tensors: str) -> _Inputs:
        assert images.shape == (16, 24, 3) and return_tensors == "pt"
        return _Inputs(pixel_values=torch.from_numpy(images).float())

    def batch_decode(self, ids: torch.Tensor, skip_special_tokens: bool) -> list[str]:
        return [f" a scene of mean {ids.float().mean().item():.1f} "]


class FakeModel:
    def __init__(self, device: torch.device) -> None:
        self.device = device

    def generate(self, pixel_values: torch.Tensor, max_new_tokens: int, num_beams: int) -> torch.Tensor:
        assert pixel_values.device == self.device  # the inputs were moved to the model's device
        if self.device.type == "meta":  # holds no values ("meta" is the second device a CPU-only test has)
            return torch.full((1, 1), -1.0)
        return pixel_values.mean().reshape(1, 1)


@pytest.fixture
def loads(monkeypatch) -> list[tuple[str, torch.device]]:
    """Every call of the loader, with a fresh memo (the module's is process-wide)."""
    calls: list[tuple[str, torch.device]] = []
    gate = threading.Lock()

    def load(model_id: str, device: torch.device):
        with gate:
            calls.append((model_id, device))
        if model_id.endswith("missing"):
            raise OSError(f"{model_id} is not in the local cache")
        threading.Event().wait(0.05)  # a slow load: concurrent first callers overlap
        return FakeProcessor(), FakeModel(device)

    monkeypatch.setattr(caption, "_load_captioner", load)
    monkeypatch.setattr(caption, "_captioners", {})
    monkeypatch.setattr(caption, "_load_locks", {})
    return calls


def _frames(value: float) -> torch.Tensor:
    return torch.full((3, 5, 16, 24), value)


def test_two_captions_load_the_model_once(loads) -> None:
    first = scene_caption("Fox", _frames(0.5), model_id="m")
    second = scene_caption("Fox", _frames(1.0), model_id="m")
    assert (first, second) == ("a scene of mean 128.0", "a scene of mean 255.0")  # the model answered, per frame
    assert loads == [("m", torch.device("cpu"))]


def test_another_model_or_device_loads_its_own(loads) -> None:
    texts = [
        scene_caption("Fox", _frames(0.5), model_id=model_id, device=device)
        for model_id, device in [("m", "cpu"), ("n", "cpu"), ("m", "meta"), ("m", torch.device("cpu")), ("n", "meta")]
    ]
    assert texts == ["a scene of mean 128.0"] * 2 + ["a scene of mean -1.0", "a scene of mean 128.0", "a scene of mean -1.0"]
    assert loads == [("m", torch.device("cpu")), ("n", torch.device("cpu")), ("m", torch.device("meta")), ("n", torch.device("meta"))]


def test_concurrent_first_captions_share_one_load(loads) -> None:
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(scene_caption("Fox", _frames(0.5), model_id="m"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["a scene of mean 128.0"] * 4 and len(loads) == 1


def test_a_missing_model_is_tried_again_and_falls_back_each_time(loads) -> None:
    assert scene_caption("Fox", _frames(0.5), model_id="missing") == template_caption("Fox")
    assert scene_caption("Fox", _frames(0.5), model_id="missing") == template_caption("Fox")
    assert len(loads) == 2  # not remembered: a model installed meanwhile is used by the next job
