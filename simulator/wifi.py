"""A simulated Wi-Fi finished good: a TCP server speaking 55AA frames plus periodic UDP announcements.

All device logic is in `simulator.firmware.Firmware` (any subclass works); this module only carries frames,
and adds the faults that belong to the link itself (a wrong CRC, a connection closed mid-frame).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Coroutine
from contextlib import suppress
from enum import StrEnum
from types import TracebackType
from typing import Any

from simulator.firmware import Firmware
from wire.announce import Announce
from wire.errors import FrameError
from wire.frames55aa import TRAILER, Command, Decoder, Frame, encode

log = logging.getLogger(__name__)

ANNOUNCE_INTERVAL = 5.0
START_TIMEOUT = 5.0
STOP_TIMEOUT = 5.0
READ_CHUNK = 4096


class LinkFault(StrEnum):
    """Link-level misbehaviour on rebadge answers (firmware faults live in simulator.firmware.Fault)."""

    NONE = "none"
    BAD_CRC = "bad_crc"  # answer with a frame whose CRC32 is wrong
    CLOSE_MID_FRAME = "close_mid_frame"  # write half the answer frame, then close the connection


class WifiDevice:
    """One simulated Wi-Fi device on loopback; use as `async with WifiDevice(fw, announce_to=...) as dev:`."""

    def __init__(
        self,
        firmware: Firmware,
        *,
        announce_to: tuple[str, int] | None = None,
        announce_interval: float = ANNOUNCE_INTERVAL,
        host: str = "127.0.0.1",
        port: int = 0,
        link_fault: LinkFault = LinkFault.NONE,
        link_fault_times: int | None = None,
        trickle_s: float | None = None,
        latency_s: float = 0.0,
    ) -> None:
        self.firmware = firmware
        self.announce_to = announce_to
        self.announce_interval = announce_interval
        self.host = host
        self.port = port
        self.link_fault = link_fault
        self.link_fault_times = link_fault_times
        self.trickle_s = trickle_s
        # Every answer waits this long first: the air time and firmware work of a real device (benchmarks).
        self.latency_s = latency_s
        self.connections = 0
        self.frames_in = 0
        self.bad_frames = 0
        self.announcements = 0
        self._link_fault_hits = 0
        self._tg: asyncio.TaskGroup | None = None
        self._children: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    @property
    def sn(self) -> str:
        """The device's serial number."""
        return self.firmware.state.sn

    @property
    def address(self) -> tuple[str, int]:
        """Where the device accepts TCP connections (the real port once started)."""
        return self.host, self.port

    def announcement(self) -> Announce:
        """What the device broadcasts now (its PID changes when it is rebadged)."""
        s = self.firmware.state
        return Announce(sn=s.sn, pid=s.pid, ip=self.host, port=self.port, version=s.fw_version)

    async def __aenter__(self) -> WifiDevice:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen and start announcing; returns once connections are accepted."""
        if self._runner is not None:
            raise RuntimeError(f"device {self.sn} is already started")
        # Bound here, outside the runner, so a port in use is a plain OSError from start().
        server = await asyncio.start_server(self._on_connect, self.host, self.port, start_serving=False)
        self.port = int(server.sockets[0].getsockname()[1])
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._stopping = asyncio.Event()
        self._runner = asyncio.create_task(self._run(server, ready), name=f"wifi-device:{self.sn}")
        try:
            async with asyncio.timeout(START_TIMEOUT):
                await ready
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop announcing, drop every connection, and wait for all tasks to end."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._stopping.set()
        async with asyncio.timeout(STOP_TIMEOUT):
            await runner

    async def _run(self, server: asyncio.Server, ready: asyncio.Future[None]) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                try:
                    await server.start_serving()
                    if self.announce_to is not None:
                        self._spawn(self._announce_loop(self.announce_to), "announce")
                    ready.set_result(None)
                    log.debug("device %s: serving on %s:%d", self.sn, self.host, self.port)
                    await self._stopping.wait()
                finally:
                    self._tg = None
                    server.close()
                    for task in list(self._children):
                        task.cancel()
        except Exception as exc:
            if ready.done():
                raise
            ready.set_exception(exc)
        finally:
            server.close()

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        assert self._tg is not None
        task = self._tg.create_task(coro, name=f"wifi-device:{self.sn}:{what}")
        self._children.add(task)
        task.add_done_callback(self._children.discard)

    def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._tg is None:  # stopping
            writer.close()
            return
        self.connections += 1
        self._spawn(self._serve(reader, writer), f"conn{self.connections}")

    async def _announce_loop(self, target: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, family=socket.AF_INET, allow_broadcast=True
        )
        try:
            while True:
                transport.sendto(self.announcement().to_bytes(), target)
                self.announcements += 1
                await asyncio.sleep(self.announce_interval)
        finally:
            transport.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # Without this, trickled bytes would be coalesced by Nagle and arrive in one read.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        decoder = Decoder()
        try:
            while data := await reader.read(READ_CHUNK):
                for frame in decoder.feed(data):
                    self.frames_in += 1
                    if not await self._answer(frame, writer):
                        return
        except FrameError as exc:
            self.bad_frames += 1
            log.info("device %s: bad frame from the gateway (%s); closing", self.sn, exc)
            with suppress(ConnectionError):
                writer.write(encode(Frame(0, Command.ERROR, f"bad frame: {exc}".encode()[:200])))
        except ConnectionError as exc:
            log.debug("device %s: connection lost: %s", self.sn, exc)
        finally:
            writer.close()

    async def _answer(self, frame: Frame, writer: asyncio.StreamWriter) -> bool:
        """Answer one frame; False when the connection was closed on purpose."""
        if frame.cmd not in (Command.INFO, Command.REBADGE):
            await self._write(writer, encode(Frame(frame.seq, Command.ERROR, b"unknown command")))
            return True
        answer = await self.firmware.handle(frame.payload)
        if answer is None:
            return True
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        raw = encode(Frame(frame.seq, frame.cmd, answer))
        fault = self._take_link_fault() if frame.cmd == Command.REBADGE else LinkFault.NONE
        if fault is LinkFault.BAD_CRC:
            crc_at = len(raw) - TRAILER.size
            raw = raw[:crc_at] + bytes([raw[crc_at] ^ 0xFF]) + raw[crc_at + 1 :]
        if fault is LinkFault.CLOSE_MID_FRAME:
            writer.write(raw[: len(raw) // 2])
            await writer.drain()
            log.info("device %s: closing the connection mid-frame (fault)", self.sn)
            return False
        await self._write(writer, raw)
        return True

    async def _write(self, writer: asyncio.StreamWriter, raw: bytes) -> None:
        if self.trickle_s is None:
            writer.write(raw)
            await writer.drain()
            return
        for i in range(len(raw)):
            writer.write(raw[i : i + 1])
            await writer.drain()
            await asyncio.sleep(self.trickle_s)

    def _take_link_fault(self) -> LinkFault:
        if self.link_fault is LinkFault.NONE:
            return LinkFault.NONE
        if self.link_fault_times is not None and self._link_fault_hits >= self.link_fault_times:
            return LinkFault.NONE
        self._link_fault_hits += 1
        return self.link_fault
