"""One TCP connection to a Wi-Fi device, carrying device-protocol messages in 55AA frames.

One request is outstanding at a time; its answer is matched by sequence number. Any failure after the request
frame was written closes the connection (the stream is in an unknown state) and says `sent=True`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

from agent.errors import DeviceNotFoundError, DeviceTimeoutError, LinkLostError, ProtocolError
from agent.radios.base import DeviceLink
from wire.cbor import loads_map
from wire.errors import FrameError, MalformedError
from wire.frames55aa import MAX_PAYLOAD, Command, Decoder, Frame, encode

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
CLOSE_TIMEOUT = 1.0
READ_CHUNK = 4096
SEQ_MODULUS = 2**32


class ConnectionState(enum.Enum):
    """Where a link is in its life; only CONNECTED links carry requests."""

    INITIALIZED = "initialized"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


class _ClosedByDeviceError(ConnectionError):
    """The device closed the TCP connection before its answer was complete."""


@dataclass
class _Progress:
    sent: bool = False


def command_for(request: bytes) -> Command:
    """The vendor command that carries this request (devices dispatch on it before decoding)."""
    try:
        op = loads_map(request, "request").get("op")
    except MalformedError:
        op = None
    return Command.REBADGE if op == "rebadge" else Command.INFO


class WifiLink(DeviceLink):
    """A TCP connection to one device; `exchange` sends one 55AA frame and waits for the frame with its seq."""

    def __init__(self, sn: str, host: str, port: int, *, on_close: Callable[[], None] | None = None) -> None:
        super().__init__(sn)
        self.host = host
        self.port = port
        self.state = ConnectionState.INITIALIZED
        self.chunks_received = 0
        self.bytes_received = 0
        self._on_close = on_close
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._decoder = Decoder()
        self._lock = asyncio.Lock()
        self._seq = 0

    async def connect(self) -> None:
        """Open the TCP connection; DeviceNotFoundError when the device does not accept it."""
        if self.state is not ConnectionState.INITIALIZED:
            raise RuntimeError(f"link to device {self.sn} is {self.state.value}; connect it once")
        self.state = ConnectionState.CONNECTING
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        except (TimeoutError, OSError) as exc:
            self._finish()
            why = f"no answer within {CONNECT_TIMEOUT}s" if isinstance(exc, TimeoutError) else str(exc)
            raise DeviceNotFoundError(
                f"device {self.sn} is known at {self.host}:{self.port} but TCP connect failed ({why}); "
                "check that it is powered and on this network",
                sn=self.sn,
            ) from exc
        except BaseException:
            self._finish()
            raise
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.state = ConnectionState.CONNECTED
        log.debug("device %s: connected to %s:%d", self.sn, self.host, self.port)

    async def exchange(self, request: bytes, timeout: float) -> bytes:
        """Send one request frame and return the payload of the device's answer frame."""
        if len(request) > MAX_PAYLOAD:
            raise ProtocolError(f"request of {len(request)} bytes is over {MAX_PAYLOAD}", sn=self.sn)
        progress = _Progress()
        try:
            async with asyncio.timeout(timeout):
                async with self._lock:
                    return await self._exchange_locked(request, progress)
        except TimeoutError as exc:
            self._abort_if(progress.sent)
            raise DeviceTimeoutError(
                f"device {self.sn} did not answer within {timeout}s", sn=self.sn, sent=progress.sent
            ) from exc
        except FrameError as exc:
            self._abort_if(progress.sent)
            raise ProtocolError(f"device {self.sn} sent a bad frame: {exc}", sn=self.sn, sent=progress.sent) from exc
        except OSError as exc:
            self._abort_if(progress.sent)
            raise LinkLostError(
                f"connection to device {self.sn} lost: {exc or type(exc).__name__}", sn=self.sn, sent=progress.sent
            ) from exc
        except BaseException:
            # Cancelled mid-exchange: the answer may still come, so the stream cannot be reused.
            self._abort_if(progress.sent)
            raise

    async def _exchange_locked(self, request: bytes, progress: _Progress) -> bytes:
        if self.state is not ConnectionState.CONNECTED or self._writer is None:
            raise LinkLostError(f"link to device {self.sn} is {self.state.value}", sn=self.sn)
        seq = self._next_seq()
        cmd = command_for(request)
        self._writer.write(encode(Frame(seq, cmd, request)))
        progress.sent = True
        await self._writer.drain()
        return await self._read_answer(seq, cmd)

    async def _read_answer(self, seq: int, cmd: Command) -> bytes:
        assert self._reader is not None
        while True:
            data = await self._reader.read(READ_CHUNK)
            if not data:
                raise _ClosedByDeviceError("device closed the connection before answering")
            self.chunks_received += 1
            self.bytes_received += len(data)
            for frame in self._decoder.feed(data):
                answer = self._match(frame, seq, cmd)
                if answer is not None:
                    return answer

    def _match(self, frame: Frame, seq: int, cmd: Command) -> bytes | None:
        if frame.cmd == Command.ERROR and frame.seq in (seq, 0):
            text = frame.payload.decode("utf-8", "replace")[:200]
            raise FrameError(f"device answered ERROR to seq {seq}: {text!r}", field="cmd")
        if frame.seq != seq:
            log.debug("device %s: dropped frame seq %d while waiting for %d", self.sn, frame.seq, seq)
            return None
        if frame.cmd != cmd:
            raise FrameError(f"answer to seq {seq} has command 0x{frame.cmd:02x}, expected 0x{cmd:02x}", field="cmd")
        return frame.payload

    def _next_seq(self) -> int:
        # Seq 0 is left to device-initiated ERROR frames.
        self._seq = self._seq % (SEQ_MODULUS - 1) + 1
        return self._seq

    def _abort_if(self, sent: bool) -> None:
        if sent and self._writer is not None:
            log.info("device %s: dropping the connection after a failed exchange", self.sn)
            self._writer.transport.abort()
            self._finish()

    def _finish(self) -> None:
        self.state = ConnectionState.CLOSED
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        writer, self._writer = self._writer, None
        try:
            if writer is not None:
                writer.close()
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await writer.wait_closed()
        except (TimeoutError, OSError) as exc:
            log.debug("device %s: close: %s", self.sn, exc)
        finally:
            self._finish()
