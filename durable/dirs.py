"""Private directories (a gateway's state, the platform's data) made on first use, or refused in plain words.

It imports nothing of the project, so every party may use it (import-linter checks that); each turns
`UnusableDirectoryError` into its own error.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path


class UnusableDirectoryError(Exception):
    """A directory cannot be created or written; the message names the setting, the path and what to do."""

    def __init__(self, message: str, *, path: Path) -> None:
        super().__init__(message)
        self.path = path


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _file_in_the_way(path: Path) -> Path:
    """The first component of `path` that exists and is not a directory."""
    for part in reversed([path, *path.parents]):
        if part.exists() and not part.is_dir():
            return part
    return path


def make_private_dir(path: Path, mode: int, setting: str) -> Path:
    """Create `path` (and missing parents) with `mode` if missing; refuse one this user cannot write in.

    `setting` names where the path came from (a config key or a command-line option), for the message.
    """
    change = f"set {setting} to a directory that user {_user()} may write"
    try:
        path.mkdir(mode=mode, parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise UnusableDirectoryError(
            f"{setting} {path} is a file, not a directory: move the file away, or {change}", path=path
        ) from exc
    except NotADirectoryError as exc:
        raise UnusableDirectoryError(
            f"{setting} {path} cannot be created: {_file_in_the_way(path)} is a file, not a directory; {change}",
            path=path,
        ) from exc
    except OSError as exc:
        raise UnusableDirectoryError(
            f"{setting} {path} cannot be created ({exc.strerror}): create it for user {_user()} "
            f"(install -d -m {mode:o} -o {_user()} {path}), or {change}",
            path=path,
        ) from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise UnusableDirectoryError(
            f"{setting} {path} is not writable by user {_user()}: give it to that user "
            f"(chown {_user()} {path}), or {change}",
            path=path,
        )
    return path
