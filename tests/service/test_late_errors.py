"""A job that fails after its request was accepted: an `InvalidInput` blames the request (INVALID_ARGUMENT
naming the field) only when it names a request field; one about a stage's own argument is INTERNAL."""

from __future__ import annotations

import grpc
import pytest
from service_fakes import FakePipeline, collect

from anymole.errors import InvalidInput
from anymole.pipeline import Failed, MotionChunk
from anymole.service.errors import names_request_field


class LateError(FakePipeline):
    """`FakePipeline` whose job raises ``error`` where its first motion would come out: mid-run, after the
    request was checked, queued and started."""

    def __init__(self, error: Exception) -> None:
        super().__init__(steps=2)
        self.error = error

    async def run(self, spec, token, report, device):
        async for event in super().run(spec, token, report, device):
            if isinstance(event, MotionChunk):
                raise self.error
            yield event


async def test_internal_invalid_input_fails_the_job_as_internal(make_server, connect, tiny, make_req):
    # a stage calling the baseline with a mask it built wrongly: the client's request is not to blame
    bug = InvalidInput("known", "must be a (F,) bool mask, got torch.float32")
    _, port = await make_server(LateError(bug))
    client = await connect(port)
    up = await client.upload_character(tiny())
    events = [st.event for st in await collect(client.inbetween(make_req(up, method="fake")))]
    failed = events[-1]
    assert isinstance(failed, Failed)
    assert failed.code == grpc.StatusCode.INTERNAL.value[0]
    assert failed.field == ""  # no request field for a plugin to highlight
    assert "known: must be a (F,) bool mask, got torch.float32" in failed.message
    assert failed.message.startswith("internal error")


async def test_late_invalid_input_naming_a_request_field_stays_invalid_argument(
    make_server, connect, tiny, make_req
):
    # the request's own data found bad only while the job ran: the client is told which field to fix
    reason = "joint 3 of this keyframe cannot be reached by the rig's limits"
    _, port = await make_server(LateError(InvalidInput("keyframes[1].rotations", reason)))
    client = await connect(port)
    up = await client.upload_character(tiny())
    events = [st.event for st in await collect(client.inbetween(make_req(up, method="fake")))]
    failed = events[-1]
    assert isinstance(failed, Failed)
    assert failed.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert failed.field == "keyframes[1].rotations"
    assert failed.message == f"keyframes[1].rotations: {reason}"


@pytest.mark.parametrize(
    ("field", "request_field"),
    [
        ("keyframes[2].rotations", True),
        ("context.fps", True),
        ("total_frames", True),
        ("character_id", True),
        ("context_images", False),  # the sampler's renders, named apart from the request's context
        ("key_images", False),
        ("known", False),
        ("", False),
    ],
)
def test_names_request_field(field: str, request_field: bool) -> None:
    assert names_request_field(field) is request_field
