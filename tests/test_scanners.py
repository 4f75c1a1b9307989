"""Scanners into the one dispatcher: a serial scanner on a real pty (partial reads, garbage, a double read, unplug
and replug), the keyboard on a terminal and off one, HID key codes on a fixed US layout (a uinput device where the
kernel has one), and the dispatcher's own bounds (a full queue, cancellation)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tty
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.dispatch import ScanDispatcher
from agent.errors import JournalTimeoutError
from agent.scanners.keyboard import read_keyboard
from agent.scanners.keymap import US_LAYOUT, Key, KeyDecoder
from agent.scanners.lines import MAX_SN_LINE, LineAssembler
from agent.scanners.serial_port import read_serial
from tests.uplink_support import running
from wire.refusals import RefusalReason
from wire.topics import Result, ScanEvent

# Bound on waiting for a scan to come through.
WAIT_S = 5.0
# A replugged scanner is reopened within this in tests (SERIAL_REOPEN_S is 2 s in the agent).
REOPEN_S = 0.05
DEBOUNCE_S = 1.0


@dataclass
class Scans:
    """The line's stand-in behind a real dispatcher: records each SN it is asked to scan and each event."""

    asked: list[str] = field(default_factory=list)
    events: list[ScanEvent] = field(default_factory=list)
    pulse: asyncio.Event = field(default_factory=asyncio.Event)
    hold: asyncio.Event | None = None  # set: scans wait for it
    faults: dict[str, Exception] = field(default_factory=dict)  # SN -> what its scan raises (once)

    async def scan(self, sn: str, request_id: str | None) -> ScanEvent:
        if self.hold is not None:
            await self.hold.wait()
        if sn in self.faults:
            raise self.faults.pop(sn)
        self.asked.append(sn)
        event = ScanEvent(sn=sn, result=Result.CONFIRMED, id=request_id)
        await self.on_event(event)
        return event

    async def on_event(self, event: ScanEvent) -> None:
        self.events.append(event)
        self.pulse.set()

    async def until(self, count: int) -> None:
        async with asyncio.timeout(WAIT_S):
            while len(self.events) < count:
                self.pulse.clear()
                await self.pulse.wait()


@contextlib.asynccontextmanager
async def dispatching(
    scans: Scans, *, workers: int = 2, queue_size: int = 8, debounce_s: float = DEBOUNCE_S
) -> AsyncIterator[ScanDispatcher]:
    dispatcher = ScanDispatcher(scans.scan, scans.on_event, workers=workers, queue_size=queue_size,
                                debounce_s=debounce_s)  # fmt: skip
    task = asyncio.create_task(dispatcher.run(), name="test dispatcher")
    try:
        yield dispatcher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Pty:
    """A pty whose slave is reached through a stable symlink, as udev names a USB scanner; unplugging closes the
    master (the reader's reads fail), plugging opens a new pty and points the link at it."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master = -1
        self.slave = -1

    def plug(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        tmp = self.link.with_suffix(".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(self.slave))
        tmp.replace(self.link)
        # Our end of the slave is closed: the reader holds its own, so closing the master hangs up only the reader.
        os.close(self.slave)

    def unplug(self) -> None:
        os.close(self.master)
        self.master = -1
        self.link.unlink()

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> None:
        if self.master >= 0:
            os.close(self.master)


@pytest.fixture
def pty_port(tmp_path: Path) -> Iterator[Pty]:
    port = Pty(tmp_path / "ttyScanner")
    port.plug()
    yield port
    port.close()


async def _logged(caplog: pytest.LogCaptureFixture, *words: str, times: int = 1) -> None:
    """Wait until log messages holding any of `words` came `times` times (the log is the reader's only signal)."""
    async with asyncio.timeout(WAIT_S):
        while sum(any(w in r.getMessage() for w in words) for r in caplog.records) < times:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def _opened(caplog: pytest.LogCaptureFixture, times: int) -> None:
    """Wait until the scanner logged its port open `times` times (it reads only once it is open)."""
    await _logged(caplog, "open at", times=times)


# -- lines --------------------------------------------------------------------------------------------------------


def test_partial_reads_are_assembled_and_an_over_long_line_is_skipped_whole() -> None:
    lines = LineAssembler("any")
    assert lines.feed(b"SN-00") == []
    assert lines.feed(b"01\rSN-0002\n") == [b"SN-0001", b"SN-0002"]
    assert lines.feed(b"X" * (MAX_SN_LINE + 10)) == [None]  # reported once, as over-long
    assert lines.feed(b"Y" * 50) == []  # still the same line: not an SN
    assert lines.feed(b"tail\rSN-0003\r") == [b"SN-0003"]  # its tail ends at the terminator and is dropped


@pytest.mark.parametrize(
    ("terminator", "data", "lines"),
    [
        ("cr", b"SN-1\rSN-2\r", [b"SN-1", b"SN-2"]),
        ("lf", b"SN-1\nSN-2\n", [b"SN-1", b"SN-2"]),
        ("crlf", b"SN-1\r\nSN-2\r", [b"SN-1"]),  # a lone CR does not end a CRLF line
        ("any", b"SN-1\r\nSN-2\n", [b"SN-1", b"", b"SN-2"]),  # the empty line between CR and LF is skipped later
    ],
)
def test_each_terminator_ends_lines_as_configured(terminator: str, data: bytes, lines: list[bytes]) -> None:
    assert LineAssembler(terminator).feed(data) == lines  # type: ignore[arg-type]


# -- serial scanners on a real pty --------------------------------------------------------------------------------


async def test_serial_scanner_assembles_refuses_garbage_and_counts_a_double_read_once(
    pty_port: Pty, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    scans = Scans()
    async with dispatching(scans) as dispatcher, running(
        read_serial(str(pty_port.link), 9600, dispatcher, reopen_s=REOPEN_S), "test serial"
    ):  # fmt: skip
        await _opened(caplog, 1)
        for chunk in (b"SN-00", b"01\r", b"\xff\xfe\x01\r\n", b"SN-0001\r", b"\x1b[2J\r", b"SN-0002\n"):
            pty_port.write(chunk)
            await asyncio.sleep(0.02)
        await scans.until(4)
    assert scans.asked == ["SN-0001", "SN-0002"]  # the second SN-0001 came within the debounce: counted once
    garbage = [e for e in scans.events if e.result is Result.REFUSED]
    assert [e.reason for e in garbage] == [RefusalReason.BAD_SN] * 2
    assert "not a serial number" in garbage[0].message
    assert garbage[0].sn == "\\xff\\xfe\\x01"
    assert garbage[1].sn == "\\x1b[2J"  # escaped: no control sequence reaches the technician's terminal
    assert "\x1b" not in garbage[1].message
    assert dispatcher.counts.debounced == 1
    assert dispatcher.counts.garbage == 2
    assert any("unreadable bytes" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


async def test_a_timeout_in_a_scan_is_a_gateway_fault_not_a_scanner_gone(
    pty_port: Pty, caplog: pytest.LogCaptureFixture
) -> None:
    """A journal timeout is an OSError (TimeoutError): it once reached the serial loop and read as "went away"."""
    caplog.set_level(logging.INFO)
    scans = Scans(faults={"SN-0001": JournalTimeoutError("journal: reserve did not finish within 30 s")})
    async with dispatching(scans) as dispatcher, running(
        read_serial(str(pty_port.link), 9600, dispatcher, reopen_s=REOPEN_S), "test serial"
    ) as reader:  # fmt: skip
        await _opened(caplog, 1)
        pty_port.write(b"SN-0001\r")
        await scans.until(1)
        pty_port.write(b"SN-0002\r")
        await scans.until(2)
        assert not reader.done()
    fault, fine = scans.events
    assert (fault.sn, fault.result, fault.reason) == ("SN-0001", Result.REFUSED, RefusalReason.GATEWAY_FAULT)
    assert "did not finish within 30 s" in fault.message
    assert (fine.sn, fine.result) == ("SN-0002", Result.CONFIRMED)
    assert dispatcher.health()["faults"] == 1
    assert not any("went away" in r.getMessage() for r in caplog.records)
    assert sum("open at" in r.getMessage() for r in caplog.records) == 1  # the port was never reopened


async def test_the_same_code_after_the_debounce_window_counts_again(
    pty_port: Pty, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    scans = Scans()
    async with dispatching(scans, debounce_s=0.2) as dispatcher, running(
        read_serial(str(pty_port.link), 9600, dispatcher, reopen_s=REOPEN_S), "test serial"
    ):  # fmt: skip
        await _opened(caplog, 1)
        pty_port.write(b"SN-0001\r")
        await scans.until(1)
        await asyncio.sleep(0.3)
        pty_port.write(b"SN-0001\r")
        await scans.until(2)
    assert scans.asked == ["SN-0001", "SN-0001"]


async def test_a_scanner_unplugged_and_replugged_mid_run_is_read_again(
    pty_port: Pty, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    scans = Scans()
    async with dispatching(scans) as dispatcher, running(
        read_serial(str(pty_port.link), 9600, dispatcher, reopen_s=REOPEN_S), "test serial"
    ) as reader:  # fmt: skip
        await _opened(caplog, 1)
        pty_port.write(b"SN-0001\r")
        await scans.until(1)
        pty_port.unplug()
        await _logged(caplog, "went away", "closed its port")
        await asyncio.sleep(5 * REOPEN_S)  # it keeps looking while the port is gone
        assert not reader.done()
        pty_port.plug()
        await _opened(caplog, 2)
        pty_port.write(b"SN-0002\r")
        await scans.until(2)
    assert scans.asked == ["SN-0001", "SN-0002"]
    missing = [r for r in caplog.records if "cannot be opened" in r.getMessage()]
    assert missing, "the gone port is reported"
    assert sum(r.levelno == logging.WARNING for r in missing) == 1  # once per outage, not every retry


# -- the keyboard -------------------------------------------------------------------------------------------------


async def test_keyboard_without_a_terminal_says_so_and_returns(caplog: pytest.LogCaptureFixture) -> None:
    read_fd, write_fd = os.pipe()
    scans = Scans()
    with os.fdopen(read_fd) as stdin, contextlib.closing(os.fdopen(write_fd, "wb")):
        async with dispatching(scans) as dispatcher:
            async with asyncio.timeout(WAIT_S):
                await read_keyboard(dispatcher, stdin)  # returns: no traceback, nothing else stops
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is None
    message = errors[0].getMessage()
    assert "not a terminal" in message
    assert "scanner.keyboard = false" in message


async def test_keyboard_on_a_terminal_hands_in_typed_lines_and_leaves_it_blocking(
    caplog: pytest.LogCaptureFixture,
) -> None:
    master, slave = os.openpty()
    scans = Scans()
    with os.fdopen(slave) as stdin:
        async with dispatching(scans) as dispatcher, running(read_keyboard(dispatcher, stdin), "keyboard") as task:
            os.write(master, b"SN-0007\n")
            await scans.until(1)
            # The terminal is shared with the console's output: it must not have been made non-blocking.
            assert os.get_blocking(slave)
            os.close(master)  # the terminal hangs up
            async with asyncio.timeout(WAIT_S):
                await task  # returns: no exception, nothing else stops
    assert scans.asked == ["SN-0007"]
    assert any("keyboard scanning is off" in r.getMessage() for r in caplog.records)


# -- HID scanners -------------------------------------------------------------------------------------------------


def _type(keys: KeyDecoder, text: str) -> list[bytes]:
    """Key events a US-layout scanner sends for `text` (Enter at the end)."""
    by_char = {plain: (code, False) for code, (plain, _) in US_LAYOUT.items() if code < 71}
    by_char.update({shifted: (code, True) for code, (plain, shifted) in US_LAYOUT.items() if shifted != plain})
    out: list[bytes] = []
    for ch in text:
        code, shifted = by_char[ch]
        if shifted:
            keys.feed(Key.LEFTSHIFT, 1)
        for value in (1, 0):
            line = keys.feed(code, value)
            assert line is None
        if shifted:
            keys.feed(Key.LEFTSHIFT, 0)
    for value in (1, 0):
        line = keys.feed(Key.ENTER, value)
        if line is not None:
            out.append(line)
    return out


def test_hid_key_codes_are_mapped_on_a_fixed_us_layout() -> None:
    keys = KeyDecoder()
    assert _type(keys, "SN-0001") == [b"SN-0001"]
    assert _type(keys, "Ab_z/Y:9") == [b"Ab_z/Y:9"]  # Y and Z where a US keyboard has them, whatever the host uses
    keys.feed(Key.CAPSLOCK, 1)
    keys.feed(Key.CAPSLOCK, 0)
    for code in (31, 49):  # s, n with Caps Lock: upper case; 12 (-) is not a letter
        keys.feed(code, 1)
    keys.feed(12, 1)
    keys.feed(2, 2)  # autorepeat is ignored
    assert keys.feed(Key.KPENTER, 1) == b"SN-"
    keys.feed(183, 1)  # F13: no character; its line must not pass as a shorter SN
    keys.feed(2, 1)
    assert keys.feed(Key.ENTER, 1) == b"\x001"


def test_the_keymap_codes_are_the_kernels() -> None:
    ecodes = pytest.importorskip("evdev.ecodes", reason="evdev is the 'hid' extra")
    names = {
        2: "KEY_1", 11: "KEY_0", 12: "KEY_MINUS", 16: "KEY_Q", 21: "KEY_Y", 30: "KEY_A", 44: "KEY_Z", 50: "KEY_M",
        52: "KEY_DOT", 53: "KEY_SLASH", 57: "KEY_SPACE", 71: "KEY_KP7", 82: "KEY_KP0", 98: "KEY_KPSLASH",
    }  # fmt: skip
    for code, name in names.items():
        assert getattr(ecodes, name) == code, name
    for key in Key:
        assert getattr(ecodes, f"KEY_{key.name}") == key.value, key.name


@pytest.mark.parametrize(
    ("selector", "said"),
    [("Honeywell Voyager 1450g", "no input device is named 'Honeywell Voyager 1450g'"),
     ("/dev/input/event-none", "no input device at /dev/input/event-none")],
)  # fmt: skip
async def test_a_missing_hid_scanner_is_reported_once_and_looked_for_again(
    selector: str, said: str, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("evdev", reason="evdev is the 'hid' extra")
    from agent.scanners.hid import read_hid  # noqa: PLC0415 - needs evdev

    caplog.set_level(logging.DEBUG, logger="agent.scanners.hid")
    scans = Scans()
    async with dispatching(scans) as dispatcher, running(read_hid(selector, dispatcher, reopen_s=0.02), "hid") as task:
        await asyncio.sleep(0.2)  # about ten looks
        assert not task.done()  # it keeps looking: a scanner plugged in later is found
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert said in warnings[0]
    assert "scanner.hid_devices" in warnings[0]


def _uinput_usable() -> str | None:
    """Why a uinput device cannot be made here, or None."""
    if not Path("/dev/uinput").exists():
        return "/dev/uinput does not exist (no uinput module in this kernel; try 'modprobe uinput' as root)"
    if not os.access("/dev/uinput", os.W_OK):
        return "/dev/uinput is not writable by this user"
    return None


@pytest.mark.skipif(_uinput_usable() is not None, reason=str(_uinput_usable()))
async def test_a_uinput_keyboard_is_grabbed_and_read_through_evdev(caplog: pytest.LogCaptureFixture) -> None:
    evdev = pytest.importorskip("evdev", reason="evdev is the 'hid' extra")
    from agent.scanners.hid import read_hid  # noqa: PLC0415 - needs evdev

    caplog.set_level(logging.INFO)
    scans = Scans()
    name = f"rebadge test scanner {os.getpid()}"
    with evdev.UInput(name=name) as ui:
        async with dispatching(scans) as dispatcher, running(read_hid(name, dispatcher, reopen_s=REOPEN_S), "hid"):
            await _logged(caplog, "grabbed")
            for code, shifted in [(31, True), (49, True), (12, False), (11, False), (2, False), (28, False)]:
                if shifted:
                    ui.write(evdev.ecodes.EV_KEY, Key.LEFTSHIFT, 1)
                ui.write(evdev.ecodes.EV_KEY, code, 1)
                ui.write(evdev.ecodes.EV_KEY, code, 0)
                if shifted:
                    ui.write(evdev.ecodes.EV_KEY, Key.LEFTSHIFT, 0)
                ui.syn()
            await scans.until(1)
    assert scans.asked == ["SN-01"]


# -- the dispatcher's bounds --------------------------------------------------------------------------------------


async def test_a_full_queue_is_refused_busy_at_once() -> None:
    hold = asyncio.Event()
    scans = Scans(hold=hold)
    async with dispatching(scans, workers=1, queue_size=1) as dispatcher:
        assert await dispatcher.submit("SN-0001", "test")  # taken by the worker, which waits
        await asyncio.sleep(0.01)
        assert await dispatcher.submit("SN-0002", "test")  # waits in the queue
        async with asyncio.timeout(WAIT_S):  # not a wait for room: refused now
            busy = await dispatcher.scan("SN-0003", "test", "req-3")
        assert busy.result is Result.REFUSED
        assert busy.reason is RefusalReason.GATEWAY_BUSY
        assert busy.id == "req-3"
        assert busy in scans.events  # reported like any other outcome
        assert dispatcher.health()["busy"] == 1
        hold.set()
        await scans.until(3)
    assert scans.asked == ["SN-0001", "SN-0002"]


async def test_cancellation_is_never_swallowed() -> None:
    scans = Scans(hold=asyncio.Event())
    dispatcher = ScanDispatcher(scans.scan, scans.on_event, workers=1)
    run = asyncio.create_task(dispatcher.run())
    waiting = asyncio.create_task(dispatcher.scan("SN-0001", "test"))
    queued = asyncio.create_task(dispatcher.scan("SN-0002", "test"))
    await asyncio.sleep(0.01)
    run.cancel()
    for task in (run, waiting, queued):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert dispatcher.counts.faults == 0  # a cancel is not a fault


async def test_a_flooding_source_cannot_crowd_out_the_others() -> None:
    hold = asyncio.Event()
    scans = Scans(hold=hold)
    async with dispatching(scans, workers=1, queue_size=4) as dispatcher:
        assert await dispatcher.submit("SN-0000", "serial:/dev/ttyACM0")  # the worker holds it
        await asyncio.sleep(0.01)
        flood = [await dispatcher.submit(f"SN-10{i:02d}", "mqtt", f"req-{i}", debounce=False) for i in range(4)]
        assert flood == [True, True, False, False]  # half the queue at most
        assert await dispatcher.submit("SN-0001", "serial:/dev/ttyACM0")  # the scanner still gets in
        refused = [e for e in scans.events if e.reason is RefusalReason.GATEWAY_BUSY]
        assert [e.id for e in refused] == ["req-2", "req-3"]
        assert "2 scans from mqtt are waiting already" in refused[0].message
        hold.set()
        await scans.until(6)
    assert scans.asked == ["SN-0000", "SN-1000", "SN-1001", "SN-0001"]


async def test_an_unprintable_sn_from_any_source_is_refused_escaped() -> None:
    scans = Scans()
    async with dispatching(scans) as dispatcher:
        event = await dispatcher.scan("SN-\x1b[2J0001", "mqtt", "req-esc")  # an MQTT sn is any string
        assert not await dispatcher.submit("SN-\u00e9", "mqtt", debounce=False)
        await scans.until(2)
    assert scans.asked == []
    assert (event.result, event.reason, event.id) == (Result.REFUSED, RefusalReason.BAD_SN, "req-esc")
    assert event.sn == "SN-\\x1b[2J0001"
    assert scans.events[1].sn == "SN-\\xc3\\xa9"
