"""Round trips of convert.py and the event store, and the pipeline's progress/cancel plumbing."""

from __future__ import annotations

import itertools
import threading
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from service_fakes import make_request, random_motion, tiny_character

from anymole.errors import InvalidInput, JobCancelled
from anymole.pipeline import (
    Cancelled,
    CancelToken,
    Completed,
    Failed,
    Interrupted,
    MotionChunk,
    Preview,
    Progress,
    ProgressReporter,
    Queued,
)
from anymole.rig import Character, Keyframes, Material
from anymole.rig.quat import quat_normalize
from anymole.service.jobs import JobInfo, JobState, Stamped
from anymole.service.store import event_from_json, event_to_json
from anymole.wire import convert, limits

EVENTS = [
    Queued(3),
    Progress("sample", 0.25, 0.5, 12.5, "step 5/20"),
    Progress("render", 0.0, 0.0, None, ""),
    Preview("sample", 42, 1, "image/jpeg", b"\xff\xd8jpeg-bytes", 64, 48),
    MotionChunk(10, torch.randn(3, 4, 4), torch.randn(3, 3), is_final=False),
    MotionChunk(0, torch.randn(2, 4, 4), torch.randn(2, 3), translations=torch.randn(2, 4, 3)),
    Completed("ok", (("interp", 0.25), ("stream", 0.5)), {"key_error_deg": 0.125}, 40),
    Failed(13, "boom", ""),
    Failed(3, "bad", "keyframes[1].frame"),
    Cancelled("cancelled by a client"),
    Interrupted("server restarted"),
]


def _same(a, b) -> bool:
    if isinstance(a, MotionChunk):
        return (
            a.frame_start == b.frame_start
            and a.is_final == b.is_final
            and torch.equal(a.rotations.float(), b.rotations)
            and torch.equal(a.root_translation.float(), b.root_translation)
            and (a.translations is None) == (b.translations is None)
            and (a.translations is None or torch.equal(a.translations, b.translations))
        )
    if isinstance(a, Completed):
        return (a.summary, a.timings, a.metrics, a.total_frames) == (b.summary, b.timings, b.metrics, b.total_frames)
    return a == b


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_event_round_trips_through_the_wire_and_the_store(event):
    st_in = Stamped("job-1", 7, 1234.5, event)
    msg = convert.event_to_proto(st_in)
    back = convert.event_from_proto(type(msg).FromString(msg.SerializeToString()), num_joints=4)
    assert (back.job_id, back.seq, back.time) == ("job-1", 7, 1234.5)
    assert _same(event, back.event)
    assert _same(event, event_from_json(event_to_json(event)))


@pytest.mark.parametrize("state", list(JobState), ids=lambda s: s.value)
def test_job_info_round_trips_through_the_wire(state):
    info = JobInfo("job-1", state, "sha256:" + "ab" * 32, "interp", "linear", "Fox:Survey", 1234.5, 2, 17, 82)
    msg = convert.job_info_to_proto(info)
    assert convert.job_info_from_proto(type(msg).FromString(msg.SerializeToString())) == info


@settings(max_examples=25)
@given(frames=st.integers(1, 12), joints=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_clip_round_trip_is_bit_exact(frames, joints, seed):
    motion = random_motion(frames, joints, seed)
    back = convert.clip_to_motion(convert.motion_to_clip(motion), joints, convert.Limits())
    assert torch.equal(back.rotations, motion.rotations)
    assert torch.equal(back.root_translation, motion.root_translation)
    assert back.fps == motion.fps


def test_character_asset_round_trip_keeps_materials():
    base = tiny_character(6)
    tex = torch.randint(0, 256, (8, 16, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    red, green = torch.tensor([1.0, 0.2, 0.1, 1.0]), torch.tensor([0.1, 0.9, 0.2, 0.5])
    materials = (Material(red, tex, "skin"), Material(green, None, "cloth"), Material(red, tex, "shared image"))
    colors = torch.rand(4, 4, generator=torch.Generator().manual_seed(2))
    mesh = replace(base.mesh, uvs=torch.rand(4, 2), materials=materials, face_materials=torch.tensor([2, 1]),
                   colors=colors)  # fmt: skip
    character = Character(name="textured", skeleton=base.skeleton, mesh=mesh)
    asset = convert.character_to_asset(character)
    assert len(asset.mesh.textures) == 1 and not asset.mesh.HasField("texture")  # the shared image once
    back = convert.character_from_asset_bytes(asset.SerializeToString(), "", convert.Limits())
    assert back.name == "textured" and back.skeleton.names == base.skeleton.names
    assert back.skeleton.parents == base.skeleton.parents
    assert [m.name for m in back.mesh.materials] == ["skin", "cloth", "shared image"]
    for a, b in zip(materials, back.mesh.materials, strict=True):
        assert torch.equal(a.base_color, b.base_color)
        assert (a.texture is None) == (b.texture is None)
    assert torch.equal(back.mesh.materials[0].texture, tex)  # PNG is lossless
    assert back.mesh.materials[0].texture is back.mesh.materials[2].texture
    assert back.mesh.face_materials.tolist() == [2, 1]
    assert torch.equal(back.mesh.colors, colors)
    assert torch.equal(back.mesh.faces, mesh.faces)
    torch.testing.assert_close(back.mesh.inverse_bind, mesh.inverse_bind, rtol=0, atol=0)
    torch.testing.assert_close(back.mesh.uvs, mesh.uvs, rtol=0, atol=0)


def test_one_material_mesh_of_protocol_1_1():
    asset = convert.character_to_asset(tiny_character(3))
    asset.mesh.ClearField("materials")
    asset.mesh.base_color.extend([0.25, 0.5, 0.75, 1.0])
    back = convert.character_from_asset_bytes(asset.SerializeToString(), "", convert.Limits())
    assert len(back.mesh.materials) == 1 and back.mesh.face_materials is None
    assert back.mesh.materials[0].base_color.tolist() == [0.25, 0.5, 0.75, 1.0]


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda m: m.triangle_materials.extend([0, 1]), "mesh.triangle_materials"),  # only one material
        (lambda m: m.triangle_materials.extend([0]), "mesh.triangle_materials"),  # one of two triangles
        (lambda m: setattr(m.materials[0], "texture", 0), "mesh.materials[0].texture"),  # no textures sent
        (lambda m: m.colors.extend([0.5] * 15), "mesh.colors"),  # 4 vertices need 16
        (lambda m: m.colors.extend([1.5] * 16), "mesh.colors"),
    ],
)
def test_bad_materials_name_the_field(edit, field):
    asset = convert.character_to_asset(tiny_character(3))
    edit(asset.mesh)
    with pytest.raises(InvalidInput) as err:
        convert.character_from_asset_bytes(asset.SerializeToString(), "", convert.Limits())
    assert err.value.field == field


def test_progress_reporter_weights_eta_and_cancel():
    got: list = []
    token = CancelToken()
    report = ProgressReporter(got.append, token, plan=[("a", 1.0), ("b", 3.0)], min_interval=0.0)
    report("a", 1.0)
    report("b", 0.5)
    assert [p.fraction for p in got] == [0.25, 0.625]
    assert all(p.eta_seconds is not None and p.eta_seconds >= 0 for p in got)
    token.cancel("stop")
    with pytest.raises(JobCancelled, match="stop"):
        report("b", 0.75)
    assert len(got) == 2


def test_progress_reporter_throttles_intermediate_reports():
    got: list = []
    report = ProgressReporter(got.append, CancelToken(), plan=[("a", 1.0)], min_interval=3600.0)
    for i in range(11):
        report("a", i / 10)
    assert [p.stage_fraction for p in got] == [0.0, 1.0]  # the ends always go out


def test_cancel_token_is_visible_across_threads():
    token = CancelToken()
    seen = threading.Event()

    def stage():
        while not token.cancelled:
            pass
        seen.set()

    t = threading.Thread(target=stage)
    t.start()
    token.cancel("from the loop")
    t.join(5)
    assert seen.is_set() and token.reason == "from the loop"
    token.cancel("second reason is ignored")
    assert token.reason == "from the loop"


def test_translations_survive_the_request_and_the_job_store(tmp_path):
    from anymole.rig import Motion
    from anymole.service.store import JobStore

    character = tiny_character(4)
    g = torch.Generator().manual_seed(5)
    ctx = random_motion(3, 4, seed=2)
    ctx = Motion(ctx.fps, ctx.rotations, ctx.root_translation, torch.randn(3, 4, 3, generator=g))
    keys = random_motion(2, 4, seed=3)
    key_tr = torch.randn(2, 4, 3, generator=g)
    req = convert.inbetween_request("sha256:x", ctx, Keyframes((5, 7), Motion(keys.fps, keys.rotations, keys.root_translation, key_tr)))
    spec = convert.spec_from_proto(req, character, convert.Limits())
    # The root column follows root_translation; the other joints come through bit-exact.
    assert torch.equal(spec.context.translations[:, 0], ctx.root_translation)
    assert torch.equal(spec.context.translations[:, 1:], ctx.translations[:, 1:])
    assert torch.equal(spec.keyframes.poses.translations[:, 1:], key_tr[:, 1:])
    assert torch.equal(spec.keyframes.poses.translations[:, 0], keys.root_translation)
    store = JobStore(tmp_path)
    store.create("job-t", {"state": "queued"}, spec)
    back = store.load_spec("job-t", character)
    assert back.keyframes.frames == (5, 7) and back.context.fps == ctx.fps
    assert torch.equal(back.context.translations, spec.context.translations)
    assert torch.equal(back.keyframes.poses.translations, spec.keyframes.poses.translations)
    assert torch.equal(back.keyframes.poses.rotations, spec.keyframes.poses.rotations)


def test_joint_count_is_inferred_from_motion_chunks():
    chunk = MotionChunk(3, torch.randn(5, 7, 4), torch.randn(5, 3))
    back = convert.event_from_proto(convert.event_to_proto(Stamped("j", 1, 0.0, chunk)))
    assert tuple(back.event.rotations.shape) == (5, 7, 4)
    assert torch.equal(back.event.rotations, chunk.rotations)


@pytest.mark.parametrize("with_translations", [False, True])
def test_motion_chunks_fit_one_message(with_translations):
    limits = convert.Limits(max_message_bytes=1 << 16)
    character = tiny_character(5)
    req = make_request("sha256:" + "0" * 64, 5, chunk_frames=100_000)
    if with_translations:
        req.context.translations.extend([0.0] * (req.context.frame_count * 5 * 3))
    spec = convert.spec_from_proto(req, character, limits)
    n = spec.chunk_frames
    assert 100 < n < 100_000  # capped by the message size, not down to a trickle
    g = torch.Generator().manual_seed(0)
    chunk = MotionChunk(
        4,
        quat_normalize(torch.randn(n, 5, 4, generator=g)),
        torch.randn(n, 3, generator=g),
        translations=torch.randn(n, 5, 3, generator=g) if with_translations else None,
    )
    assert convert.event_to_proto(Stamped("job-" + "f" * 16, 1 << 40, 1e9, chunk)).ByteSize() <= limits.max_message_bytes
    small = convert.spec_from_proto(make_request("sha256:" + "0" * 64, 5, chunk_frames=7), character, limits)
    assert small.chunk_frames == 7  # a request that fits keeps its chunk size


@settings(max_examples=200)
@given(st.integers(1, 12).flatmap(lambda n: st.lists(st.integers(-1, n - 1), min_size=n, max_size=n)))
def test_hierarchy_check_rejects_exactly_the_unordered_and_names_real_cycles(parents):
    from anymole.errors import InvalidInput

    try:
        limits._check_hierarchy(parents, "p")
    except InvalidInput as exc:
        assert any(p >= j for j, p in enumerate(parents))
        if "cycle" in exc.reason:
            joints = [int(i) for i in exc.reason.rsplit("joints ", 1)[1].split(" -> ")]
            assert joints[0] == joints[-1] and all(parents[a] == b for a, b in itertools.pairwise(joints))
    else:
        assert all(p < j for j, p in enumerate(parents))


def test_concurrent_atomic_writes_of_one_path_never_fail_nor_leave_parts(tmp_path):
    from anymole.service.store import write_atomic

    path = tmp_path / "character.pb"
    payloads = [bytes([i]) * 200_000 for i in range(8)]
    errors: list[BaseException] = []

    def writer(data: bytes) -> None:
        try:
            for _ in range(40):
                write_atomic(path, data)
        except BaseException as exc:  # collected: an exception in a thread would not fail the test
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert path.read_bytes() in payloads
    assert [p.name for p in tmp_path.iterdir()] == ["character.pb"]
