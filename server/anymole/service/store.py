"""On-disk state of the server: one directory per job, one file per uploaded character.

Layout under ``data_dir``::

    jobs/<job_id>/job.json         id, state, timestamps, method, label, last_seq (rewritten atomically on each
                                   state change, after the event that caused it is logged)
    jobs/<job_id>/request.json     the validated request's scalars (character id, keyframe indices, …)
    jobs/<job_id>/request.npz      its arrays: context rotations (C, J, 4), root (C, 3), keys (K, J, 4), (K, 3)
    jobs/<job_id>/events.jsonl     every event, one JSON object per line, in sequence order; a motion chunk as
                                   a `MotionRef` to the files below, never its numbers
    jobs/<job_id>/result.*.npy     the result timeline, written as motion streams (`anymole.service.timeline`):
                                   rotations (T, J, 4), root_translation (T, 3), translations (T, J, 3) when
                                   the request carried them; result.json (fps) marks it complete; drafts.f32
                                   holds provisional chunks
    jobs/<job_id>/result.npz       the result of a job stored before the timeline files (still read)
    jobs/<job_id>/result.glb|.bvh|.npz  written on the first GetResult or DownloadResult that asks for them
    jobs/<job_id>/result.mp4       the generated video of a ``video`` job (H.264), instead of a timeline
    jobs/<job_id>/video.json       its fps, frame count, size, views and the request frame of each video frame
    characters/<sha256>.<ext>      uploaded payloads (proto, glb, fbx, bvh) with <sha256>.json beside them

Events are stored as JSON with bytes (and the tensors of logs from before `MotionRef`) in base64, so that a
restarted server replays them byte-identically to what watchers saw before.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch

from anymole.errors import NotFound
from anymole.pipeline import Completed, Event, JobSpec, VideoClip
from anymole.rig import Character, Keyframes, Motion
from anymole.service.timeline import MotionRef, Timeline

__all__ = ["JobStore", "disk_bytes", "event_from_json", "event_to_json", "write_atomic"]

# Every member of the `Event` union by name, so that a new event type is stored without touching this file, and
# the reference a motion chunk is logged as.
_EVENT_TYPES: dict[str, type] = {cls.__name__: cls for cls in (*get_args(Event), MotionRef)}


def disk_bytes(path: Path) -> int:
    """Bytes a file takes on disk: its allocated blocks (a sparse result timeline counts what it holds), or its
    length where the file system does not say."""
    st = path.stat()
    return getattr(st, "st_blocks", 0) * 512 or st.st_size


def write_atomic(path: Path, data: bytes | bytearray) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so readers never see half a file.

    The temporary file is the writer's own: two threads storing the same upload at once must not truncate
    each other's file nor rename it away under the other."""
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _encode(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        arr = value.detach().cpu().to(torch.float32).numpy().astype("<f4")
        return {"__f32__": base64.b64encode(arr.tobytes()).decode(), "shape": list(arr.shape)}
    if isinstance(value, bytes):
        return {"__bytes__": base64.b64encode(value).decode()}
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and "__f32__" in value:
        arr = np.frombuffer(base64.b64decode(value["__f32__"]), dtype="<f4").reshape(value["shape"])
        return torch.from_numpy(arr.copy())
    if isinstance(value, dict) and "__bytes__" in value:
        return base64.b64decode(value["__bytes__"])
    return value


# Results that live in files of their own (the result timeline, result.mp4), not in the event log.
_RESULT_FIELDS = ("motion", "video")


def event_to_json(event: Event | MotionRef) -> dict[str, Any]:
    """A JSON-able dict of a domain event (``Completed.motion`` and ``.video`` are not stored here; see the
    result timeline and result.mp4) or of a `MotionRef`."""
    fields = {
        f.name: _encode(getattr(event, f.name)) for f in dataclasses.fields(event) if f.name not in _RESULT_FIELDS
    }
    return {"type": type(event).__name__, **fields}


def event_from_json(obj: dict[str, Any]) -> Event | MotionRef:
    """Inverse of `event_to_json`."""
    obj = dict(obj)
    cls = _EVENT_TYPES[obj.pop("type")]
    kwargs = {k: _decode(v) for k, v in obj.items()}
    if cls is Completed:
        kwargs["timings"] = tuple((str(s), float(t)) for s, t in kwargs.get("timings", ()))
    return cls(**kwargs)


class JobStore:
    """Reads and writes job directories under ``root / "jobs"``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.jobs_dir = self.root / "jobs"

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def create(self, job_id: str, meta: dict[str, Any], spec: JobSpec) -> None:
        """Create the job's directory with its metadata and request."""
        d = self.job_dir(job_id)
        d.mkdir(parents=True, exist_ok=False)
        request = {
            "character_id": spec.character_id,
            "fps": spec.context.fps,
            "key_frames": list(spec.keyframes.frames),
            "total_frames": spec.total_frames,
            "method": spec.method,
            "preset": spec.preset,
            "chunk_frames": spec.chunk_frames,
            "seed": spec.seed,
            "label": spec.label,
        }
        write_atomic(d / "request.json", json.dumps(request, indent=1).encode())
        arrays = {
            "context_rotations": spec.context.rotations,
            "context_root": spec.context.root_translation,
            "context_translations": spec.context.translations,
            "key_rotations": spec.keyframes.poses.rotations,
            "key_root": spec.keyframes.poses.root_translation,
            "key_translations": spec.keyframes.poses.translations,
        }
        with open(d / "request.npz", "wb") as fh:
            np.savez(fh, **{k: v.cpu().numpy() for k, v in arrays.items() if v is not None})  # type: ignore[arg-type]
        self.write_meta(job_id, meta)

    def write_meta(self, job_id: str, meta: dict[str, Any]) -> None:
        write_atomic(self.job_dir(job_id) / "job.json", json.dumps(meta, indent=1).encode())

    def append_event(self, job_id: str, seq: int, time: float, event: Event | MotionRef) -> None:
        line = json.dumps({"seq": seq, "time": time, **event_to_json(event)}, separators=(",", ":"))
        with open(self.job_dir(job_id) / "events.jsonl", "a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    def load_spec(self, job_id: str, character: Character) -> JobSpec:
        """Rebuild a stored request for ``character`` (the character is stored separately, by id)."""
        request = json.loads((self.job_dir(job_id) / "request.json").read_text())
        with np.load(self.job_dir(job_id) / "request.npz") as z:
            arrays = {k: torch.from_numpy(z[k].copy()) for k in z.files}
        return JobSpec(
            character_id=request["character_id"],
            character=character,
            context=Motion(
                fps=request["fps"],
                rotations=arrays["context_rotations"],
                root_translation=arrays["context_root"],
                translations=arrays.get("context_translations"),
            ),
            keyframes=Keyframes(
                tuple(request["key_frames"]),
                Motion(
                    fps=request["fps"],
                    rotations=arrays["key_rotations"],
                    root_translation=arrays["key_root"],
                    translations=arrays.get("key_translations"),
                ),
            ),
            total_frames=request["total_frames"],
            method=request["method"],
            preset=request["preset"],
            chunk_frames=request["chunk_frames"],
            seed=request["seed"],
            label=request["label"],
        )

    def timeline(self, job_id: str) -> Timeline:
        """The job's motion files (result timeline and drafts)."""
        return Timeline(self.job_dir(job_id))

    def save_video(self, job_id: str, video: VideoClip) -> None:
        """Write ``video`` as result.mp4, then its description as video.json (whose presence marks the result)."""
        d = self.job_dir(job_id)
        write_atomic(self.result_path(job_id, ".mp4"), video.data)
        meta = {
            "fps": video.fps,
            "frames": video.frame_count,
            "width": video.width,
            "height": video.height,
            "views": list(video.views),
            "timeline_frames": list(video.timeline_frames),
        }
        write_atomic(d / "video.json", json.dumps(meta, indent=1).encode())

    def has_video(self, job_id: str) -> bool:
        """Whether the job's result is a video (its video.json is written last)."""
        return (self.job_dir(job_id) / "video.json").is_file()

    def load_video_meta(self, job_id: str) -> dict[str, Any]:
        path = self.job_dir(job_id) / "video.json"
        if not path.is_file():
            raise NotFound("video result", job_id)
        meta: dict[str, Any] = json.loads(path.read_text())
        return meta

    def write_npz(self, path: Path, motion: Motion) -> None:
        """Export ``motion`` as an NPZ file (arrays ``rotations``, ``root_translation``, [``translations``],
        ``fps``) at ``path``: the RESULT_FORMAT_NPZ download."""
        arrays = {"rotations": motion.rotations, "root_translation": motion.root_translation}
        if motion.translations is not None:
            arrays["translations"] = motion.translations
        with open(path, "wb") as fh:
            np.savez(fh, fps=np.float64(motion.fps), **{k: v.detach().cpu().float().numpy() for k, v in arrays.items()})  # type: ignore[arg-type]

    def result_path(self, job_id: str, suffix: str) -> Path:
        return self.job_dir(job_id) / f"result{suffix}"

    def load_result(self, job_id: str) -> Motion:
        """The result timeline: memory-mapped from its timeline files, or read from the result.npz of a job
        stored before those existed."""
        timeline = self.timeline(job_id)
        if timeline.complete:
            return timeline.load()
        path = self.result_path(job_id, ".npz")
        if not path.exists():
            raise NotFound("result", job_id)
        with np.load(path) as z:
            return Motion(
                fps=float(z["fps"]),
                rotations=torch.from_numpy(z["rotations"].copy()),
                root_translation=torch.from_numpy(z["root_translation"].copy()),
                translations=torch.from_numpy(z["translations"].copy()) if "translations" in z.files else None,
            )

    def load_all(self) -> Iterator[dict[str, Any]]:
        """The job.json of every readable job directory (a directory without one — a crash mid-create — is
        skipped); neither requests nor event logs are read here, so that a start costs the number of jobs, not
        the size of their logs and labels."""
        if not self.jobs_dir.is_dir():
            return
        for d in sorted(self.jobs_dir.iterdir()):
            meta_path = d / "job.json"
            if meta_path.is_file():
                yield json.loads(meta_path.read_text())

    def read_events(self, job_id: str) -> list[dict[str, Any]]:
        """A job's events (JSON form) in sequence order; none when it has no log yet."""
        path = self.job_dir(job_id) / "events.jsonl"
        return _read_log(path) if path.exists() else []


def _read_log(path: Path) -> list[dict[str, Any]]:
    """The events of a log up to a line cut short by a crash. That line (and anything after it) is cut off
    the file too: the next event appended would otherwise be glued onto it and lost at the next start."""
    raw = path.read_bytes()
    events: list[dict[str, Any]] = []
    good = 0
    for line in raw.splitlines(keepends=True):
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            break
        good += len(line)
    if good < len(raw):
        with open(path, "r+b") as fh:
            fh.truncate(good)
    elif raw and not raw.endswith(b"\n"):  # cut just before its newline: the event is whole
        with open(path, "ab") as fh:
            fh.write(b"\n")
    return events
