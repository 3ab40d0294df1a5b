"""Checkpoint schema and loader: the full model on ``meta`` against the TSV, tiny synthetic checkpoints."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from anymole import hub
from anymole.errors import AssetError, ModelUnavailable
from anymole.video import weights as W
from anymole.video.dynamicrafter import DynamiCrafterConfig, DynamiCrafterPrior
from anymole.video.prior import VideoCondition

REFERENCE_TOTAL = 2_609_142_405  # all 2520 entries, from the notes


@pytest.fixture(scope="module")
def full_meta() -> DynamiCrafterPrior:
    return DynamiCrafterPrior(DynamiCrafterConfig.full(), device="meta")


@pytest.fixture(scope="module")
def reference() -> dict[str, tuple[int, ...]]:
    return W.read_schema()


def test_reference_schema_file_is_the_documented_one(reference):
    assert len(reference) == 2520
    assert sum(math.prod(s) for s in reference.values()) == REFERENCE_TOTAL
    assert sum(k.startswith("model.diffusion_model.") for k in reference) == 1516
    assert reference["model.diffusion_model.init_attn.0.proj_in.weight"] == (512, 320, 1)
    assert reference["cond_stage_model.model.logit_scale"] == ()


def test_full_config_reproduces_every_key_and_shape_of_the_checkpoint(full_meta, reference):
    ours = W.checkpoint_schema(full_meta)
    diff = W.diff_schema(ours, reference)
    assert not diff, diff.describe()
    assert ours == reference


def test_full_parameter_counts_match_the_notes(full_meta):
    unet = sum(p.numel() for p in full_meta.unet.parameters())
    assert unet == 1_438_854_980
    assert sum(p.numel() for p in full_meta.image_proj.parameters()) == 48_787_456
    assert sum(p.numel() for p in full_meta.vae.parameters()) == 83_653_863
    spatial = sum(p.numel() for p in full_meta.trainable_parameters("spatial"))
    assert spatial == 938_218_180  # reference ICAdapt: 889,430,724 UNet + 48,787,456 resampler
    full = sum(p.numel() for p in full_meta.trainable_parameters("full"))
    assert full == 1_487_642_436
    assert all(not p.requires_grad for p in full_meta.vae.parameters())


def test_full_checkpoint_loads_on_meta(reference):
    prior = DynamiCrafterPrior(DynamiCrafterConfig.full(), device="meta")
    state = {k: torch.empty(s, device="meta") for k, s in reference.items()}
    W.load_checkpoint(prior, state)
    attn = prior.vae.encoder.mid_block.attentions[0].to_q.weight
    assert attn.shape == (512, 512)  # 1×1 conv squeezed to a Linear
    assert prior.unet.init_attn[0].proj_in.weight.shape == (512, 320, 1)
    assert not prior.text_encoder.token_embedding.weight.requires_grad


# ---------------------------------------------------------------- tiny synthetic checkpoints
@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    prior = DynamiCrafterPrior(DynamiCrafterConfig.tiny(), device="meta")
    gen = torch.Generator().manual_seed(3)
    return {k: torch.randn(s, generator=gen) * 0.05 for k, s in W.checkpoint_schema(prior).items()}


def test_tiny_schema_follows_the_same_mapping(tiny_state, reference):
    """Same naming, fewer blocks: with indices blanked out, the tiny and full key sets coincide."""

    def pattern(key: str) -> str:
        return re.sub(r"\.\d+\.", ".N.", re.sub(r"\.\d+\.", ".N.", key))

    assert {pattern(k) for k in tiny_state} == {pattern(k) for k in reference}
    assert tiny_state["first_stage_model.encoder.mid.attn_1.q.weight"].shape == (32, 32, 1, 1)


def test_loader_accepts_a_complete_state_dict_and_maps_every_value(tiny_state):
    prior = DynamiCrafterPrior(DynamiCrafterConfig.tiny())
    W.load_checkpoint(prior, tiny_state)
    ours = prior.state_dict()
    for ckpt_key, key in W.checkpoint_key_map(prior).items():
        expected = tiny_state[ckpt_key]
        assert torch.equal(ours[key].reshape(expected.shape), expected), key
    # spot checks of the renames: decoder levels reversed, nin_shortcut, attention 1×1 conv → Linear
    torch.testing.assert_close(
        prior.vae.decoder.up_blocks[0].resnets[1].conv1.weight, tiny_state["first_stage_model.decoder.up.3.block.1.conv1.weight"]
    )
    torch.testing.assert_close(
        prior.vae.encoder.mid_block.attentions[0].to_out[0].weight,
        tiny_state["first_stage_model.encoder.mid.attn_1.proj_out.weight"][:, :, 0, 0],
    )
    torch.testing.assert_close(prior.image_proj.latents, tiny_state["image_proj_model.latents"])


def test_export_then_load_round_trips_outputs(tiny_state):
    src = DynamiCrafterPrior(DynamiCrafterConfig.tiny()).eval()
    W.load_checkpoint(src, tiny_state)
    dst = DynamiCrafterPrior(DynamiCrafterConfig.tiny()).eval()
    W.load_checkpoint(dst, W.export_checkpoint(src))
    video = torch.rand(1, 3, 16, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cond = src.condition(["a fox trots"], video[:, :, 0], video[:, :, -1], torch.tensor([15.0]))
        cond2 = dst.condition(["a fox trots"], video[:, :, 0], video[:, :, -1], torch.tensor([15.0]))
        z = src.encode(video)
        torch.testing.assert_close(cond.context, cond2.context)
        torch.testing.assert_close(src.predict(z, torch.tensor([250]), cond), dst.predict(z, torch.tensor([250]), cond2))
        torch.testing.assert_close(src.decode(z), dst.decode(z))


@pytest.mark.parametrize("fault", ["missing", "extra", "shape"])
def test_loader_rejects_and_lists_bad_keys(tiny_state, fault):
    state = dict(tiny_state)
    if fault == "missing":
        del state["model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k_ip.weight"]
        del state["scale_arr"]
        named = ["attn2.to_k_ip.weight", "scale_arr", "2 missing"]
    elif fault == "extra":
        state["model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.alpha"] = torch.zeros(())
        named = ["attn2.alpha", "1 unexpected"]
    else:
        state["first_stage_model.quant_conv.weight"] = torch.zeros(8, 8, 3, 3)
        named = ["first_stage_model.quant_conv.weight [8, 8, 3, 3] (expected [8, 8, 1, 1])", "1 mis-shaped"]
    prior = DynamiCrafterPrior(DynamiCrafterConfig.tiny())
    before = prior.unet.out[2].weight.clone()
    with pytest.raises(W.CheckpointMismatch) as err:
        W.load_checkpoint(prior, state)
    for text in named:
        assert text in str(err.value)
    assert isinstance(err.value, ModelUnavailable)
    assert torch.equal(prior.unet.out[2].weight, before)  # nothing half-loaded


def test_framestride_alias_is_accepted(tiny_state):
    state = {k.replace("fps_embedding", "framestride_embed"): v for k, v in tiny_state.items()}
    prior = DynamiCrafterPrior(DynamiCrafterConfig.tiny())
    W.load_checkpoint(prior, state)
    torch.testing.assert_close(prior.unet.fps_embedding[0].weight, tiny_state["model.diffusion_model.fps_embedding.0.weight"])


def test_read_checkpoint_formats_and_load_pretrained(tmp_path: Path, tiny_state):
    from safetensors.torch import save_file

    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": tiny_state, "epoch": 3}, ckpt)
    st = tmp_path / "model.safetensors"
    save_file(tiny_state, str(st))
    for path in (ckpt, st):
        got = W.read_checkpoint(path)
        assert set(got) == set(tiny_state)
        assert torch.equal(got["image_proj_model.latents"], tiny_state["image_proj_model.latents"])
    prior = W.load_pretrained(ckpt, DynamiCrafterConfig.tiny())
    assert prior.unet.out[2].weight.device.type == "cpu"
    torch.testing.assert_close(prior.unet.out[2].weight, tiny_state["model.diffusion_model.out.2.weight"])
    z = torch.zeros(1, 4, 16, 8, 8)
    cond = VideoCondition(torch.zeros(1, 40, 32), torch.zeros(1, 4, 16, 8, 8), torch.tensor([10.0]))
    with torch.no_grad():
        assert torch.isfinite(prior.predict(z, torch.tensor([1]), cond)).all()

    with pytest.raises(ModelUnavailable, match="models pull"):
        W.read_checkpoint(tmp_path / "absent.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(AssetError):
        W.read_checkpoint(junk)


def test_full_load_pretrained_needs_the_clip_tokenizer(tmp_path: Path):
    (tmp_path / "model.ckpt").write_bytes(b"")
    with pytest.raises(ModelUnavailable, match=r"vocab\.json"):
        W.load_pretrained(tmp_path / "model.ckpt")


# ---------------------------------------------------------------- hub
def test_pull_without_internet_says_how_to_get_the_file(tmp_path: Path, monkeypatch):
    def offline(**kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(hub, "_download", offline)
    with pytest.raises(ModelUnavailable) as err:
        hub.pull("dynamicrafter-512-interp", tmp_path)
    message = str(err.value)
    assert "Doubiiu/DynamiCrafter_512_Interp" in message and str(tmp_path) in message and "--video-prior" in message


def test_pull_downloads_checkpoint_and_tokenizer(tmp_path: Path, monkeypatch):
    calls = []

    def fake(repo_id: str, filename: str, local_dir: Path) -> Path:
        calls.append((repo_id, filename))
        path = Path(local_dir) / filename
        path.write_text(repo_id)
        return path

    monkeypatch.setattr(hub, "_download", fake)
    path = hub.pull("dynamicrafter-512-interp", tmp_path)
    assert path == tmp_path / "model.ckpt" and path.read_text() == "Doubiiu/DynamiCrafter_512_Interp"
    assert {f for _, f in calls} == {"model.ckpt", "vocab.json", "merges.txt"}
    assert hub.locate("dynamicrafter-512-interp", tmp_path) == path
    with pytest.raises(ModelUnavailable, match="unknown model"):
        hub.pull("sora", tmp_path)


def test_vae_mapping_agrees_with_diffusers_own_ldm_converter(tiny_state):
    """An independent implementation of the LDM → diffusers VAE renames gives the same tensors."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    prior = DynamiCrafterPrior(DynamiCrafterConfig.tiny())
    W.load_checkpoint(prior, tiny_state)
    vae_part = {k: v for k, v in tiny_state.items() if k.startswith("first_stage_model.")}
    converted = convert_ldm_vae_checkpoint(vae_part, dict(prior.vae.config))
    ours = prior.vae.state_dict()
    assert set(converted) == set(ours)
    for key, value in converted.items():
        assert torch.equal(ours[key], value.reshape(ours[key].shape)), key


def test_cli_models_pull_reports_the_path_or_the_manual_steps(tmp_path: Path, monkeypatch):
    from typer.testing import CliRunner

    from anymole.cli import app

    def fake(repo_id: str, filename: str, local_dir: Path) -> Path:
        (Path(local_dir) / filename).write_text("x")
        return Path(local_dir) / filename

    monkeypatch.setattr(hub, "_download", fake)
    result = CliRunner().invoke(app, ["models", "pull", "--dest", str(tmp_path)])
    assert result.exit_code == 0 and str(tmp_path / "model.ckpt") in result.output

    def offline(**kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(hub, "_download", offline)
    result = CliRunner().invoke(app, ["models", "pull", "--dest", str(tmp_path)])
    assert isinstance(result.exception, ModelUnavailable) and "--video-prior" in str(result.exception)
