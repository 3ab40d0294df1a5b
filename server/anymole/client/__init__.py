"""The headless Python client of the AnyMoLe server (the plugins' reference and the tests' client).

    AnyMoLeClient.connect("127.0.0.1:50051", token=None) -> client   (asyncio; handshake on connect)
    client.video(job_id) -> VideoResult; preview_image(preview) -> (H, W, 3) uint8   (``video`` jobs)
    fill_remote(server, asset, clip=..., context=(0, 40), keys=[60, 82], out=...)   (blocking, progress bar)
    run_demo(out_dir) -> Path                                          (in-process server, bundled Fox)
"""

from anymole.client._client import DEFAULT_CHUNK_BYTES, AnyMoLeClient, Uploaded, VideoResult, preview_image
from anymole.client._fill import FillResult, fill_remote, run_demo

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "AnyMoLeClient",
    "FillResult",
    "Uploaded",
    "VideoResult",
    "fill_remote",
    "preview_image",
    "run_demo",
]
