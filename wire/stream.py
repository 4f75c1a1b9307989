"""The shared shape of incremental frame decoders: feed any chunks, get whole frames, errors in order."""

from __future__ import annotations

import abc
from typing import Generic, TypeVar

from wire.errors import FrameError

F = TypeVar("F")


class StreamDecoder(abc.ABC, Generic[F]):
    """Buffers bytes and cuts frames with `_next`; noise skipped before a frame start is counted in `skipped`.

    Good frames ahead of a bad one in the same chunk are returned; the bad one's FrameError is raised on the next
    call, so no frame is lost and no error is swallowed.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.skipped = 0
        self._error: FrameError | None = None

    def feed(self, data: bytes) -> list[F]:
        """Add bytes; return the frames they complete (a bad frame after good ones raises on the next call)."""
        self._buf += data
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        frames: list[F] = []
        while True:
            try:
                frame = self._next()
            except FrameError as exc:
                if not frames:
                    raise
                self._error = exc
                return frames
            if frame is None:
                return frames
            frames.append(frame)

    @abc.abstractmethod
    def _next(self) -> F | None:
        """Cut one frame off the front of `_buf`, None when more bytes are needed; FrameError for a bad one."""
