"""Scene caption fallback and the adaptation cache."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from anymole.errors import ModelUnavailable
from anymole.video.cache import AdaptationCache, adaptation_key, tensor_digest
from anymole.video.caption import scene_caption, template_caption
from anymole.video.icadapt import ICAdaptConfig


def test_template_caption() -> None:
    assert template_caption("Fox") == "Fox, a 3D animated character, moving in a rendering scene."
    assert template_caption("  great_dane ").startswith("great dane, ")
    assert scene_caption("Fox") == template_caption("Fox")  # no frames: no model


def test_missing_caption_model_falls_back_without_download(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache: the model is not installed
    frames = torch.rand(3, 5, 16, 16)
    assert scene_caption("Fox", frames, model_id="anymole-test/no-such-captioner") == template_caption("Fox")
    assert not any(tmp_path.rglob("*.safetensors"))


def test_key_depends_on_every_input() -> None:
    base = dict(
        model_id="dynamicrafter-512-interp",
        model_config={"channels": 320},
        character_digest="c" * 64,
        context_digest=tensor_digest(torch.zeros(2, 3)),
        icadapt_config=ICAdaptConfig(),
    )
    key = adaptation_key(**base)
    assert key == adaptation_key(**base) and len(key) == 64
    changes = [
        {"model_id": "other"},
        {"model_config": {"channels": 32}},
        {"character_digest": "d" * 64},
        {"context_digest": tensor_digest(torch.zeros(2, 3).index_fill(1, torch.tensor([1]), 1e-3))},
        {"icadapt_config": dataclasses.replace(ICAdaptConfig(), steps=499)},
        {"icadapt_config": dataclasses.replace(ICAdaptConfig(), mode="lora")},
    ]
    keys = {adaptation_key(**(base | c)) for c in changes}
    assert len(keys) == len(changes) and key not in keys
    assert tensor_digest(torch.zeros(2, 3)) != tensor_digest(torch.zeros(3, 2))


def test_cache_round_trip(tmp_path, make_conv_prior) -> None:
    cache = AdaptationCache(tmp_path / "cache")
    trained, fresh = make_conv_prior(), make_conv_prior()
    with torch.no_grad():
        trained.spatial.weight.add_(1.0)
    assert not cache.load_into("k1", fresh)
    path = cache.put("k1", trained)
    assert path.is_file() and "k1" in cache and "k2" not in cache
    assert cache.load_into("k1", fresh)
    torch.testing.assert_close(fresh.spatial.weight, trained.spatial.weight)
    # one folder per key holding the link and the entry it points to, nothing else (replaced entries are collected)
    cache.put("k1", trained)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["k1"]
    link, *entries = sorted((tmp_path / "cache" / "k1").iterdir(), key=lambda p: p.name != "current")
    assert link.is_symlink() and entries == [link.resolve()] and path == link / "adapted.safetensors"


def test_cache_put_failure_leaves_no_entry(tmp_path, conv_prior, monkeypatch) -> None:
    cache = AdaptationCache(tmp_path)

    def broken(path):
        raise ModelUnavailable("conv-prior", "disk full")

    monkeypatch.setattr(conv_prior, "save_adapted", broken)
    with pytest.raises(ModelUnavailable):
        cache.put("k", conv_prior)
    assert "k" not in cache and list(tmp_path.iterdir()) == []


def test_tensor_digest_of_scalars_and_shapes() -> None:
    one = tensor_digest(torch.tensor(1.0))  # 0-dim: raised before
    assert one == tensor_digest(torch.tensor(1.0)) and one != tensor_digest(torch.tensor(2.0))
    assert one != tensor_digest(torch.tensor([1.0]))  # the shape is part of the digest
    assert tensor_digest(torch.arange(6.0).reshape(2, 3).t()) != tensor_digest(torch.arange(6.0).reshape(3, 2))
