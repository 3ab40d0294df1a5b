"""The ``anymole`` method with the estimator's frozen ViT pair (issue 14.1): a server given a models folder
(`VideoSettings.estimator_weights`, ``anymole serve --estimator-weights``) trains the ``fast`` and ``quality``
presets on DINOv2-reg + FiT3D features, ``draft`` (and every preset without weights) on the conv backbone;
the method's description and the job's summary say which. Tiny ViTs of the same architecture stand in for
the published weights, saved in the published layouts and loaded through the real path."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
import torch

from anymole.client import AnyMoLeClient
from anymole.estimator import EstimatorConfig, backbones
from anymole.pipeline import AnyMoLePipeline, Completed, Failed, VideoSettings
from anymole.pipeline.methods.anymole import AnyMoLeMethod
from anymole.rig import Keyframes, Motion
from anymole.wire.proto.anymole.v1 import anymole_pb2 as pb
from asset_files import ASSETS, cached_load
from vit_folders import random_vit, write_models_folder

CONTEXT, KEY = 49, 72  # Fox "Survey" at 24 fps: 2 s of context, a key 1 s later
PAIR = ("dinov2_vitb14_reg", "fit3d_vits14_reg")


@pytest.fixture
def models(tmp_path: Path) -> Path:
    return write_models_folder(tmp_path / "models", random_vit(1), random_vit(2))


def _settings(**kw: object) -> VideoSettings:
    return VideoSettings(prior="tiny", icadapt_steps=1, ddim_steps=2, width=96, height=64, views=2,
                         estimator_steps=20, mimic_steps=4, **kw)  # type: ignore[arg-type]  # fmt: skip


def _method(settings: VideoSettings) -> AnyMoLeMethod:
    method = AnyMoLePipeline(settings).method("anymole")
    assert isinstance(method, AnyMoLeMethod)
    return method


async def _fast_fox_request(client: AnyMoLeClient) -> pb.InbetweenRequest:
    """A `fast` anymole fill of the Fox's Survey: 2 s of context, the true pose as the key 1 s later."""
    up = await client.upload_file(ASSETS / "Fox.glb")
    truth = cached_load("Fox.glb").motions["Survey"]
    key = Keyframes((KEY,), Motion(truth.fps, truth.rotations[[KEY]], truth.root_translation[[KEY]]))
    return client.request(up, truth.slice(0, CONTEXT), key, method="anymole", preset="fast")


def test_presets_take_the_vit_pair_only_where_weights_are(models: Path) -> None:
    with_vits = _method(_settings(estimator_weights=models))
    for preset in ("fast", "quality"):
        est, _ = with_vits.configs(preset)
        assert est.backbones == PAIR
        assert est.weights == (str(models / "dinov2-with-registers-base"),
                               str(models / "fit3d-vits14-reg" / "dinov2_reg_small_finetuned.pth"))  # fmt: skip
        assert est == EstimatorConfig.preset(preset, steps=20, weights=est.weights)
    assert with_vits.configs("draft")[0].backbones == ("conv",)
    assert "DINOv2-reg ViT-B/14 + FiT3D ViT-S/14" in with_vits.spec().description
    without = _method(_settings())
    assert all(without.configs(p)[0].backbones == ("conv",) for p in ("draft", "fast", "quality"))
    assert "estimator backbone: conv" in without.spec().description


async def test_fast_job_trains_on_the_vits_and_the_second_job_reuses_them_loaded(make_server, connect, models,
                                                                                 tmp_path, monkeypatch):
    loads: list[str] = []
    load = backbones.pretrained_vit

    def counted(name: str, path: object) -> object:
        loads.append(name)
        return load(name, path)

    monkeypatch.setattr(backbones, "pretrained_vit", counted)
    pipeline = AnyMoLePipeline(_settings(estimator_weights=models, cache_dir=tmp_path / "cache"))
    server, port = await make_server(pipeline=pipeline)
    client: AnyMoLeClient = await connect(port)
    info = {m.name: m for m in (await client.server_info()).capabilities.methods}["anymole"]
    assert "FiT3D ViT-S/14" in info.description
    request = await _fast_fox_request(client)

    done = [st.event async for st in client.inbetween(request)][-1]
    assert isinstance(done, Completed), done
    assert "estimator backbone dinov2_vitb14_reg+fit3d_vits14_reg" in done.summary
    assert done.metrics["estimator_cached"] == 0 and torch.isfinite(torch.tensor(done.metrics["estimator_final_loss"]))
    assert done.metrics["key_error_deg"] == 0
    assert sorted(loads) == sorted(PAIR)  # each ViT read once, for training
    # the cached estimator comes back with the frozen backbones its config names, still loaded from the first job
    again = [st.event async for st in client.inbetween(request)][-1]
    assert isinstance(again, Completed), again
    assert again.metrics["estimator_cached"] == 1 and "dinov2_vitb14_reg+fit3d_vits14_reg" in again.summary
    assert sorted(loads) == sorted(PAIR) and len(pipeline.backbones) == 2
    first, second = (await client.list_jobs())[:2]
    a, _ = await client.result(first.job_id, 24)
    b, _ = await client.result(second.job_id, 24)
    torch.testing.assert_close(a.rotations, b.rotations, rtol=0, atol=1e-6)  # same scene, same seed: same fill
    await server.stop(0.0)
    assert len(pipeline.backbones) == 0  # released with the server


@pytest.mark.parametrize("damage", ["another architecture", "truncated"])
async def test_a_damaged_weight_file_fails_the_job_as_the_servers_problem(make_server, connect, models, damage):
    """The ViT weights are the server's files (`anymole serve --estimator-weights`), not the client's: one that
    holds another ViT or cannot be read fails a fast job with FAILED_PRECONDITION naming the file and the flag, as
    a damaged video prior does; not INVALID_ARGUMENT (nothing in the request is wrong) nor INTERNAL."""
    target = models / "fit3d-vits14-reg" / "dinov2_reg_small_finetuned.pth"
    if damage == "truncated":
        target.write_bytes(target.read_bytes()[:4096])
    else:
        torch.save({"pos_embed": torch.zeros(1, 4, 7)}, target)  # a 7-wide ViT: no architecture it could be
    pipeline = AnyMoLePipeline(_settings(estimator_weights=models))
    _, port = await make_server(pipeline=pipeline)
    client: AnyMoLeClient = await connect(port)
    request = await _fast_fox_request(client)
    failed = [st.event async for st in client.inbetween(request)][-1]
    assert isinstance(failed, Failed), failed
    assert failed.code == grpc.StatusCode.FAILED_PRECONDITION.value[0], failed
    assert str(target.resolve()) in failed.message and "--estimator-weights" in failed.message, failed.message
    assert damage != "another architecture" or "7-wide" in failed.message
