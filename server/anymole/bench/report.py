"""What every benchmark's report writer shares: the results JSON, and one section of docs/benchmarks.md
rewritten in place."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["replace_section", "write_json"]


def write_json(results: dict[str, Any], path: Path) -> None:
    """Write the results as indented JSON (the machine-readable twin of the markdown table)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")


def replace_section(path: Path, heading: str, body: str) -> None:
    """Replace the body of the section whose heading line is exactly ``heading`` in ``path`` (up to the next
    ``## `` heading) with ``body``; a page without that section gets it at the end (a missing page: a new one)."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    line = f"\n{heading}\n"
    if line not in f"\n{text}":
        text = text.rstrip("\n") + f"\n\n{heading}\n\n{body}"
    else:
        head, rest = f"\n{text}".split(line, 1)
        nxt = rest.find("\n## ")
        tail = rest[nxt:] if nxt >= 0 else ""
        text = f"{head[1:]}\n{heading}\n\n{body}{tail}" if head else f"{heading}\n\n{body}{tail}"
    path.write_text(text)
