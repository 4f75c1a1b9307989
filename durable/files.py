"""Files written so that a crash or a concurrent reader never sees half of one: fsynced, then renamed or created.

It imports nothing of the project, so every party may use it (import-linter checks that).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Replace `path` with `data` (mode `mode`) through a file next to it, fsynced, then renamed over it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)  # the rename itself survives a power cut


def create_exclusively(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `data` (mode `mode`); FileExistsError if it exists, so a key is never overwritten."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(path.parent)


def replace_durably(source: Path, target: Path) -> None:
    """Rename `source` over `target` and make the rename survive a crash."""
    os.replace(source, target)
    _fsync_dir(target.parent)
