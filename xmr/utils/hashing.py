"""sha256 of files, streamed."""

from __future__ import annotations

import hashlib
import os


def sha256_file(path: "os.PathLike | str", chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
