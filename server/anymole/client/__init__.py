"""The headless Python client of the AnyMoLe server (the plugins' reference and the tests' client).

    AnyMoLeClient.connect("127.0.0.1:50051", token=None) -> client   (asyncio; handshake on connect)
    client.video(job_id) -> VideoResult; preview_image(preview) -> (H, W, 3) uint8   (``video`` jobs)
    fill_remote(server, asset, clip=..., context=(0, 40), keys=[60, 82], out=...)   (blocking, progress bar)
    list_jobs / watch_job / get_result / cancel_job(Remote(server), ...)   (asyncio; `anymole jobs`)
    Reconnect(total_s=120)      how long a watch waits for a server that went away (restarts) mid-job
"""

from anymole.client._client import DEFAULT_CHUNK_BYTES, AnyMoLeClient, Uploaded, VideoResult, preview_image
from anymole.client._fill import FillResult, fill_remote, fill_remote_async
from anymole.client._jobs import Remote, cancel_job, get_result, list_jobs, watch_job
from anymole.client._watch import DEFAULT_RECONNECT_S, Reconnect, ServerLost

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_RECONNECT_S",
    "AnyMoLeClient",
    "FillResult",
    "Reconnect",
    "Remote",
    "ServerLost",
    "Uploaded",
    "VideoResult",
    "cancel_job",
    "fill_remote",
    "fill_remote_async",
    "get_result",
    "list_jobs",
    "preview_image",
    "watch_job",
]
