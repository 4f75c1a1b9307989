"""The technician's console: the real agent in this process (simulated Wi-Fi goods, no broker so the uplink is
down) rendered through rich's recording console after a confirmed, a refused and an in-doubt scan; and the real
`rebadge agent console` command full-screen in tmux, ended with Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from rich.console import Console

from agent.config import config_fingerprint, parse_config
from agent.console import event_line
from agent.console_live import ConsoleFeed, console_service
from agent.console_view import BADGE_WIDTH, CONNECTED, DOWN, RECONNECTING, ConsoleState, render
from agent.errors import ConfigError
from agent.plain_words import ADVICE
from rebadge.broker import PrivateBroker
from simulator.firmware import Fault
from tests.e2e_support import REPO, WAIT_S, Gateway, running, running_goods, units, write_toml
from tests.helpers import NEW_PID, ORIGINAL_PID
from tests.line_support import leased_gateway
from wire.refusals import OutcomeReason, RefusalReason
from wire.topics import Result, ScanEvent

WIDTH, HEIGHT = 140, 60
TMUX_WAIT_S = 20.0
# The uplink shows as down this long after it was lost (10 s on the line).
DOWN_AFTER_S = 0.5


def test_every_reason_has_plain_words_and_a_next_step() -> None:
    for reason in [*RefusalReason, *OutcomeReason]:
        words = ADVICE[reason]
        assert words.said, reason
        assert words.action, reason


@contextlib.asynccontextmanager
async def running_feed(gateway: Gateway, out: io.StringIO) -> AsyncIterator[ConsoleFeed]:
    bells = Console(file=out, force_terminal=True)
    feed = console_service(gateway.config, bells)
    async with running(feed.service.run(), "console:agent"):
        async with asyncio.timeout(WAIT_S):
            await feed.service.ready.wait()
        yield feed


def screen(state: ConsoleState) -> tuple[str, str]:
    """The screen as text and as HTML (for colours)."""
    console = Console(record=True, width=WIDTH, height=HEIGHT, file=io.StringIO(), color_system="truecolor")
    console.print(render(state))
    return console.export_text(clear=False), console.export_html(inline_styles=True)


def _cell_styles(html: str, word: str) -> str:
    """The inline style of the first span holding `word`."""
    match = re.search(r'<span style="([^"]*)">[^<]*' + re.escape(word), html)
    assert match is not None, f"{word!r} not in a styled span"
    return match.group(1)


async def test_console_shows_each_outcome_in_words_colours_and_aligned_columns(tmp_path: Path) -> None:
    gateway, issuer = await leased_gateway(tmp_path)
    ok = units(1, "OKUNIT")[0]
    busy = units(1, "BUSYUNIT", fault=Fault.REFUSE)[0]
    doubt = units(1, "DOUBTUNIT", fault=Fault.SILENT_AFTER_APPLY, fault_times=1)[0]
    bells = io.StringIO()
    async with (
        running_goods(issuer, [ok, busy, doubt], gateway.discovery_port),
        running_feed(gateway, bells) as feed,
    ):
        await feed.refresh()
        text, html = screen(feed.state)
        assert "ready, scan now" in text
        assert "no scan yet" in text
        assert f"config {config_fingerprint(gateway.config)}" in text
        assert "station ST-3" in text
        assert "work order WO-42" in text
        assert re.search(r"uplink\s+down", text)
        assert "radio wifi" in text
        assert "connected (running)" in text

        assert (await feed.service.scan(ok.sn)).result is Result.CONFIRMED
        await feed.refresh()
        text, html = screen(feed.state)
        assert "███ █ █" in text  # "OK" in block letters
        assert f"rebadged {ORIGINAL_PID} -> {NEW_PID}, slot" in text
        assert re.search(r"confirmed\s+1 / 5", text)
        assert "next: next unit" in text
        assert "#008000" in _cell_styles(html, "   OK    ")  # the badge on green
        assert "\a" not in bells.getvalue()

        refused = await feed.service.scan(busy.sn)
        await feed.refresh()
        assert (refused.result, refused.reason) == (Result.REFUSED, RefusalReason.BUSY)
        text, html = screen(feed.state)
        assert "the unit was busy and changed nothing" in text
        assert "next: scan the unit again" in text
        assert "#800000" in _cell_styles(html, " REFUSED ")  # the badge on red
        assert bells.getvalue().count("\a") == 1

        in_doubt = await feed.service.scan(doubt.sn)
        await feed.refresh()
        assert (in_doubt.result, in_doubt.reason) == (Result.IN_DOUBT, OutcomeReason.NO_ANSWER)
        text, html = screen(feed.state)
        assert "next: keep it powered and scan it again" in text
        assert re.search(rf"{doubt.sn}\s+slot {in_doubt.slot}", text)  # the in-doubt panel names it
        assert "rescan each to settle it" in text
        assert "in doubt (1)" in text
        assert "#808000" in _cell_styles(html, " RESCAN  ")  # the badge on yellow
        assert bells.getvalue().count("\a") == 2
        assert re.search(r"uplink\s+down \(scans go on offline\)", text)

        # The history: newest first, each badge as wide as the others, so the SN column never moves.
        rows = [line for line in text.splitlines() if any(u.sn in line for u in (ok, busy, doubt))]
        history = [line for line in rows if re.search(r"\d\d:\d\d:\d\d", line)]
        assert [next(u.sn for u in (ok, busy, doubt) if u.sn in line) for line in history] == [
                doubt.sn, busy.sn, ok.sn,
            ]  # fmt: skip
        assert len({line.index(sn) for line, sn in zip(history, [doubt.sn, busy.sn, ok.sn], strict=True)}) == 1
        for word in ("OK", "REFUSED", "RESCAN"):
            assert f"{word:^{BADGE_WIDTH}}" in text


def _tmux(socket: str, *args: str) -> str:
    """tmux on a server of the test's own (`-L`), never a user's."""
    return subprocess.run(["tmux", "-L", socket, *args], check=True, capture_output=True, text=True).stdout


def _wait_screen(socket: str, session: str, needle: str) -> str:
    deadline = time.monotonic() + TMUX_WAIT_S
    shown = ""
    while time.monotonic() < deadline:
        shown = _tmux(socket, "capture-pane", "-p", "-t", session)
        if needle in shown:
            return shown
        time.sleep(0.1)
    raise AssertionError(f"{needle!r} not on the screen within {TMUX_WAIT_S}s:\n{shown}")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (apt-get install tmux)")
async def test_console_command_full_screen_scans_typed_sns_keeps_warnings_apart_and_ends_on_ctrl_c(
    tmp_path: Path,
) -> None:
    gateway, issuer = await leased_gateway(tmp_path)
    gateway.settings["scanner"]["keyboard"] = True  # the technician types (or a keyboard-wedge scanner does)
    config_file = write_toml(tmp_path / "agent.toml", gateway.settings)
    ok = units(1, "TMUXOK")[0]
    session = f"rebadge-console-{tmp_path.name}"
    rebadge = shlex.quote(str(REPO / ".venv/bin/rebadge"))
    command = (
        f"cd {shlex.quote(str(REPO))} && env -u COLUMNS -u LINES {rebadge} agent console --no-bell "
        f"-c {shlex.quote(str(config_file))}; echo exit=$?; sleep 30"
    )
    socket = session
    async with running_goods(issuer, [ok], gateway.discovery_port):
        _tmux(socket, "-f", "/dev/null", "new-session", "-d", "-s", session, "-x", str(WIDTH), "-y", "50", command)
        try:
            _tmux(socket, "resize-window", "-t", session, "-x", str(WIDTH), "-y", "50")
            shown = await asyncio.to_thread(_wait_screen, socket, session, "ready, scan now")
            assert "no scan yet" in shown
            assert "station ST-3" in shown
            assert re.search(r"uplink\s+(down|reconnecting)", shown)
            # The broker is not there: its warnings land in the warnings panel, never as raw log lines on the screen.
            shown = await asyncio.to_thread(_wait_screen, socket, session, "Connection refused")
            panel = shown[shown.index("warnings") :]
            assert "Connection refused" in panel.split("ready, scan now")[0]
            assert " WARNING " not in shown
            _tmux(socket, "send-keys", "-t", session, ok.sn, "Enter")
            shown = await asyncio.to_thread(_wait_screen, socket, session, f"rebadged {ORIGINAL_PID} -> {NEW_PID}")
            assert "███ █ █" in shown  # OK, large
            assert re.search(r"confirmed\s+1 / 5", shown)
            _tmux(socket, "send-keys", "-t", session, "not a label!", "Enter")
            shown = await asyncio.to_thread(_wait_screen, socket, session, "the scanned code is not a serial number")
            assert "next: scan the SN label again" in shown
            assert re.search(r"REFUSED\s+not a label!", shown)  # in the history, under the OK
            _tmux(socket, "send-keys", "-t", session, "C-c")
            shown = await asyncio.to_thread(_wait_screen, socket, session, "exit=")
            assert "console stopped: the agent shut down cleanly and its journal is closed" in shown
            assert "exit=0" in shown
            assert "Traceback" not in shown
        finally:
            await asyncio.to_thread(
                subprocess.run, ["tmux", "-L", socket, "kill-server"], check=False, capture_output=True
            )


def test_fingerprint_follows_the_settings_but_never_the_secrets() -> None:
    base = parse_config({}, "test", env={})
    other = parse_config({"line": {"find_timeout_s": 9.0}}, "test", env={})
    assert config_fingerprint(base) != config_fingerprint(other)
    assert config_fingerprint(base) == config_fingerprint(parse_config({}, "test", env={}))
    one = parse_config({"mqtt": {"password": "hunter2"}}, "test", env={})
    two = parse_config({"mqtt": {"password": "correct horse"}}, "test", env={})
    assert config_fingerprint(one) == config_fingerprint(two) != config_fingerprint(base)  # set, but not which


def test_station_and_work_order_must_be_one_printable_line() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"line": {"work_order": 'WO-1\n{"result":"confirmed"}'}}, "agent.toml", env={})
    assert "line.work_order" in str(err.value)
    assert "control character" in str(err.value)


def test_what_units_and_scanners_supply_cannot_restyle_the_screen() -> None:
    state = ConsoleState(gw="ab" * 8)
    hostile = "[blink red]X[/blink red]\x1b[2J"
    state.add(ScanEvent(sn=hostile, result=Result.REFUSED, reason=RefusalReason.BAD_SN))
    state.add(ScanEvent(sn="SN1", result=Result.CONFIRMED, old_pid="[bold]p", new_pid="q\x1b]0;pwned\x07", slot=1))
    state.in_doubt = [(hostile, 3)]
    state.warnings.appendleft("scanner read \x1b[2Jgarbage")
    console = Console(record=True, width=WIDTH, height=HEIGHT, file=io.StringIO(), force_terminal=True)
    console.print(render(state))
    raw, text = console.file.getvalue(), console.export_text(clear=False)  # type: ignore[attr-defined]
    assert "[blink red]X[/blink red]" in text
    assert "[bold]p" in text
    assert "\x1b[2J" not in raw
    assert "\x1b]0;" not in raw
    assert "\x1b[5m" not in raw  # no blink
    assert "scanner read \\x1b[2Jgarbage" in text  # written out, not obeyed


def test_the_one_line_console_shows_supplied_text_without_obeying_it() -> None:
    line = event_line(ScanEvent(sn="BAD\x1b[2J", result=Result.REFUSED, message="[red]read \x07 junk"))
    assert line.plain.startswith(" REFUSED ")
    assert "BAD\\x1b[2J" in line.plain
    assert "[red]read \\x07 junk" in line.plain


async def test_uplink_shows_connected_then_reconnecting_then_down_and_back(
    tmp_path: Path, broker: PrivateBroker
) -> None:
    gateway, _ = await leased_gateway(tmp_path, broker=broker)
    feed = console_service(gateway.config, Console(file=io.StringIO()))
    feed.down_after_s = DOWN_AFTER_S
    async with running(feed.service.run(), "console:agent"):
        async with asyncio.timeout(WAIT_S):
            await feed.service.ready.wait()
        assert feed.service.uplink is not None
        await feed.service.uplink.wait_connected(WAIT_S)
        words = []
        async with asyncio.timeout(WAIT_S):
            for wanted, change in (
                (CONNECTED, broker.stop),
                (RECONNECTING, None),
                (DOWN, broker.start),
                (CONNECTED, None),
            ):
                while feed.state.uplink != wanted:
                    await feed.refresh()
                    await asyncio.sleep(0.05)
                words.append(feed.state.uplink)
                text, _ = screen(feed.state)
                assert re.search(rf"uplink\s+{wanted}", text)
                if change is not None:
                    await asyncio.to_thread(change)
    assert words == [CONNECTED, RECONNECTING, DOWN, CONNECTED]
