"""General firmware: the PID lives in the MCU, which the Wi-Fi module reaches over a UART.

`SimulatedMcu` is the MCU, on the master side of a real pty pair; the module (`GeneralFirmware`) opens the slave
side as its UART with pyserial-asyncio-fast, exactly as it would open a real serial port.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tty
from enum import StrEnum
from pathlib import Path
from types import TracebackType

import serial_asyncio_fast

from simulator.firmware import DeviceState, Faults, Firmware
from wire import device, mcu_uart
from wire.device import Firmware as FirmwareKind
from wire.device import Status
from wire.errors import MalformedError
from wire.keys import KeyRing
from wire.mcu_uart import McuCommand, McuDecoder, McuFrame, ProductInfo, SetPidStatus

log = logging.getLogger(__name__)

MCU_REPLY_TIMEOUT = 1.0
UART_OPEN_TIMEOUT = 5.0
UART_CLOSE_TIMEOUT = 2.0
UART_BAUDRATE = 9600
READ_CHUNK = 4096


class McuError(Exception):
    """The MCU did not answer in time, refused, or answered something else than asked."""


class McuFault(StrEnum):
    """Misbehaviour a simulated MCU can be told to show."""

    NONE = "none"
    SILENT = "silent"  # answer nothing at all
    DROP_SET_ACK = "drop_set_ack"  # apply SET_PID but send no ack
    IGNORE_SET = "ignore_set"  # neither apply SET_PID nor ack it (queries are still answered)
    REFUSE_SET = "refuse_set"  # answer SET_PID with REFUSED and keep the PID
    SILENT_AFTER_SET = "silent_after_set"  # apply SET_PID, then answer nothing at all for `silent_s` (a brown-out)


class SimulatedMcu:
    """An MCU holding the PID; use as `async with SimulatedMcu(pid) as mcu:` and give `mcu.port` to the module."""

    def __init__(
        self, pid: str, *, version: str = "1.0.0", mode: int = 0, fault: McuFault = McuFault.NONE,
        silent_s: float = 1.0,
    ) -> None:  # fmt: skip
        self.info = ProductInfo(pid=pid, version=version, mode=mode)
        self.fault = fault
        self.silent_s = silent_s
        self._silent_until = 0.0
        self.port = ""
        self.queries = 0
        self.set_requests: list[str] = []
        self.bad_frames = 0
        self._master: int | None = None
        self._slave: int | None = None
        self._decoder = McuDecoder()

    @property
    def pid(self) -> str:
        """The PID the MCU holds."""
        return self.info.pid

    async def __aenter__(self) -> SimulatedMcu:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Open the pty pair and answer whatever the module writes."""
        master, slave = os.openpty()
        # Raw at once: the line discipline must not echo or translate bytes before the module opens the port.
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self.port = os.ttyname(slave)
        asyncio.get_running_loop().add_reader(master, self._readable)

    def stop(self) -> None:
        """Stop answering and close the pty pair."""
        if self._master is not None:
            asyncio.get_running_loop().remove_reader(self._master)
            os.close(self._master)
        if self._slave is not None:
            os.close(self._slave)
        self._master = self._slave = None

    def _readable(self) -> None:
        assert self._master is not None
        try:
            data = os.read(self._master, READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        try:
            frames = self._decoder.feed(data)
        except MalformedError as exc:
            self.bad_frames += 1
            log.info("mcu: dropped a bad frame from the module: %s", exc)
            return
        for frame in frames:
            answer = self._answer(frame)
            if answer is not None:
                self._write(mcu_uart.encode(answer))

    def _answer(self, frame: McuFrame) -> McuFrame | None:
        if self.fault is McuFault.SILENT or asyncio.get_running_loop().time() < self._silent_until:
            return None
        if frame.cmd == McuCommand.PRODUCT_QUERY:
            self.queries += 1
            return McuFrame(mcu_uart.VERSION_MCU, McuCommand.PRODUCT_QUERY, self.info.to_bytes())
        if frame.cmd == McuCommand.HEARTBEAT:
            return McuFrame(mcu_uart.VERSION_MCU, McuCommand.HEARTBEAT, b"\x01")
        if frame.cmd == McuCommand.SET_PID:
            return self._set_pid(frame.data)
        log.debug("mcu: ignored command 0x%02x", frame.cmd)
        return None

    def _set_pid(self, data: bytes) -> McuFrame | None:
        try:
            pid = mcu_uart.parse_set_pid_request(data)
        except MalformedError as exc:
            log.info("mcu: refused SET_PID: %s", exc)
            status = SetPidStatus.REFUSED
        else:
            self.set_requests.append(pid)
            if self.fault is McuFault.IGNORE_SET:
                return None
            if self.fault is McuFault.REFUSE_SET:
                status = SetPidStatus.REFUSED
            else:
                self.info = self.info.model_copy(update={"pid": pid})
                status = SetPidStatus.OK
            if self.fault is McuFault.SILENT_AFTER_SET:
                self._silent_until = asyncio.get_running_loop().time() + self.silent_s
                log.info("mcu: took PID %s, now silent for %.1f s (fault)", pid, self.silent_s)
            if self.fault in (McuFault.DROP_SET_ACK, McuFault.SILENT_AFTER_SET):
                return None
        return McuFrame(mcu_uart.VERSION_MCU, McuCommand.SET_PID, bytes([status]))

    def _write(self, raw: bytes) -> None:
        assert self._master is not None
        try:
            os.write(self._master, raw)
        except BlockingIOError:
            # The module is not reading; a real MCU's UART would drop the bytes too.
            log.warning("mcu: UART buffer full, dropped a %d-byte answer", len(raw))


class McuUart(asyncio.Protocol):
    """The module's side of the UART: one request at a time, answers matched by command."""

    def __init__(self, port: str, sn: str) -> None:
        self.port = port
        self.sn = sn
        self._transport: asyncio.Transport | None = None
        self._frames: asyncio.Queue[McuFrame] = asyncio.Queue()
        self._decoder = McuDecoder()
        self._lock = asyncio.Lock()
        self._lost: asyncio.Future[None] | None = None

    async def open(self) -> None:
        """Open the serial port (pyserial opens it in a worker thread)."""
        loop = asyncio.get_running_loop()
        self._lost = loop.create_future()
        async with asyncio.timeout(UART_OPEN_TIMEOUT):
            transport, _ = await serial_asyncio_fast.create_serial_connection(
                loop, lambda: self, self.port, baudrate=UART_BAUDRATE
            )
        # connection_made comes later (call_soon); the port is usable now.
        self._transport = transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """pyserial-asyncio-fast hands over the transport."""
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        """Queue whole frames; noise and bad frames are logged and dropped (the request will time out)."""
        try:
            frames = self._decoder.feed(data)
        except MalformedError as exc:
            log.info("device %s: bad frame from the MCU: %s", self.sn, exc)
            return
        for frame in frames:
            self._frames.put_nowait(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        """The port is closed."""
        self._transport = None
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    async def request(self, frame: McuFrame, timeout: float) -> McuFrame:
        """Send one frame and return the MCU's answer with the same command; McuError after `timeout`."""
        async with self._lock:
            if self._transport is None:
                raise McuError(f"device {self.sn}: the MCU UART {self.port} is not open")
            while not self._frames.empty():  # a late answer to an earlier, timed-out request
                self._frames.get_nowait()
            self._transport.write(mcu_uart.encode(frame))
            try:
                async with asyncio.timeout(timeout):
                    while (answer := await self._frames.get()).cmd != frame.cmd:
                        log.debug("device %s: MCU sent cmd 0x%02x out of turn", self.sn, answer.cmd)
            except TimeoutError as exc:
                raise McuError(f"device {self.sn}: MCU did not answer cmd 0x{frame.cmd:02x} in {timeout}s") from exc
            return answer

    async def close(self) -> None:
        """Close the port and wait (bounded) until it is released."""
        if self._transport is not None:
            self._transport.close()
            if self._lost is not None:
                try:
                    async with asyncio.timeout(UART_CLOSE_TIMEOUT):
                        await self._lost
                except TimeoutError:
                    log.warning("device %s: MCU UART %s did not close in time", self.sn, self.port)


class GeneralFirmware(Firmware):
    """Module firmware whose PID lives in the MCU: rebadge forwards the PID, info reads it back from the MCU."""

    def __init__(
        self,
        state: DeviceState,
        issuers: KeyRing,
        *,
        mcu_port: str,
        mcu_timeout: float = MCU_REPLY_TIMEOUT,
        faults: Faults | None = None,
        state_file: Path | None = None,
    ) -> None:
        if state.firmware is not FirmwareKind.GENERAL:
            raise ValueError(f"device {state.sn}: GeneralFirmware needs state.firmware 'general', not {state.firmware}")
        super().__init__(state, issuers, faults=faults, state_file=state_file)
        self.mcu_timeout = mcu_timeout
        self.uart = McuUart(mcu_port, state.sn)

    async def __aenter__(self) -> GeneralFirmware:
        await self.uart.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.uart.close()

    async def query_mcu(self) -> ProductInfo:
        """The MCU's product query, its PID copied into the module's state."""
        answer = await self.uart.request(mcu_uart.product_query(), self.mcu_timeout)
        try:
            info = mcu_uart.parse_product_info(answer.data)
        except MalformedError as exc:
            raise McuError(f"device {self.state.sn}: bad MCU product info: {exc}") from exc
        self.state.pid = info.pid
        return info

    async def handle(self, data: bytes) -> bytes | None:
        """As Firmware.handle, but `info` reports the PID the MCU reports; silent when the MCU is."""
        try:
            is_info = isinstance(device.decode_request(data), device.InfoRequest)
        except MalformedError:
            is_info = False
        if is_info:
            try:
                await self.query_mcu()
            except McuError as exc:
                log.warning("device %s: no info without the MCU: %s", self.state.sn, exc)
                return None
        return await super().handle(data)

    async def rebadge(self, lease_token: bytes, grant_token: bytes) -> Status:
        """Firmware.rebadge against the MCU's current PID; `busy`, with nothing applied, if the MCU fails."""
        try:
            await self.query_mcu()
            return await super().rebadge(lease_token, grant_token)
        except McuError as exc:
            log.warning("device %s: rebadge not applied, MCU failed: %s", self.state.sn, exc)
            return Status.BUSY

    async def apply_pid(self, pid: str) -> None:
        """Forward the PID to the MCU and confirm it with a product query."""
        try:
            answer = await self.uart.request(mcu_uart.set_pid_request(pid), self.mcu_timeout)
        except McuError:
            # The ack may be lost after the MCU applied: ask before answering `busy` for a PID that did change.
            if (await self.query_mcu()).pid != pid:
                raise
        else:
            try:
                status = mcu_uart.parse_set_pid_answer(answer.data)
            except MalformedError as exc:
                raise McuError(f"device {self.state.sn}: {exc}") from exc
            if status is not SetPidStatus.OK:
                raise McuError(f"device {self.state.sn}: MCU refused PID {pid} ({status.name})")
        if (info := await self.query_mcu()).pid != pid:
            raise McuError(f"device {self.state.sn}: MCU reports PID {info.pid} after taking {pid}")
