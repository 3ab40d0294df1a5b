"""Method limits are discoverable (issue 15.4) over a real loopback server: MethodInfo's output kind and timing
rules, checked against the rule the ``video`` method enforces, and GetCharacter answering whether the server
holds a character."""

from __future__ import annotations

import grpc
import pytest

from anymole.errors import InvalidInput
from anymole.video.timeline import plan_timeline
from anymole.wire.proto.anymole.v1 import anymole_pb2 as pb


async def test_method_info_reports_output_and_timing_rules(make_server, connect):
    _, port = await make_server()
    client = await connect(port)
    methods = {m.name: m for m in client.info.capabilities.methods}
    interp, video, anymole = methods["interp"], methods["video"], methods["anymole"]
    assert interp.output == pb.METHOD_OUTPUT_MOTION and interp.available
    assert (interp.min_context_seconds, interp.key_spacing_seconds, interp.max_gap_seconds) == (0, 0, 0)
    assert video.output == pb.METHOD_OUTPUT_VIDEO
    assert (video.min_context_seconds, video.key_spacing_seconds, video.max_gap_seconds) == (2.0, 0.0, 2.0)
    assert (anymole.min_context_seconds, anymole.key_spacing_seconds, anymole.max_gap_seconds) == (2.0, 0.0, 2.0)
    assert not video.available and "--video-prior" in video.unavailable_reason  # no prior on this server
    assert anymole.output == pb.METHOD_OUTPUT_MOTION and not anymole.available and anymole.unavailable_reason

    # A client that follows the advertised numbers builds a timeline the video methods accept (keys on any
    # frames, gaps up to the longest); one frame beyond either limit is refused.
    for fps in (24.0, 25.0, 30.0, 60.0):
        context = round(video.min_context_seconds * fps) + 1
        end = context - 1
        longest = round(video.max_gap_seconds * fps)
        keys = [end + 1, end + 1 + longest, end + 1 + longest + 7, end + 1 + 2 * longest + 7]
        plan_timeline(context, fps, keys)
        with pytest.raises(InvalidInput) as err:
            plan_timeline(context - 1, fps, [k - 1 for k in keys])  # context one frame short
        assert err.value.field == "context"
        with pytest.raises(InvalidInput) as err:
            plan_timeline(context, fps, [keys[0], keys[1] + 1])  # a gap one frame longer than max_gap_seconds
        assert err.value.field == "keyframes"


async def test_get_character_answers_whether_the_server_holds_it(make_server, connect, tiny):
    server, port = await make_server()
    client = await connect(port)
    character = tiny(6)
    from anymole.service.characters import character_id_of
    from anymole.wire import convert

    payload = convert.character_to_asset(character).SerializeToString(deterministic=True)
    cid = character_id_of(payload)
    assert await client.get_character(cid) is None
    up = await client.upload(payload, pb.CHARACTER_FORMAT_PROTO, "chain")
    held = await client.get_character(cid)
    assert held is not None and held.character_id == up.character_id == cid
    assert held.skeleton.names == character.skeleton.names and held.vertex_count == 4 and held.name == "chain"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.get_character("sha256:XYZ")
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith(
        "character_id"
    )

    await server.stop(0)  # the answer comes from disk after a restart
    _, port2 = await make_server()
    again = await (await connect(port2)).get_character(cid)
    assert again is not None and again.skeleton.names == character.skeleton.names
