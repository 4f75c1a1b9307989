"""`rebadge agent run --json` as a real process: one JSON object per scan on stdout, logs on stderr."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import io
import json
import os
import sys
import time
from pathlib import Path

import pytest

from agent.config import parse_config
from agent.mes_lines import MesLines
from agent.plain_words import ADVICE
from cloud_bridge.issuer import load_or_create
from rebadge.broker import PrivateBroker
from simulator.firmware import Fault
from tests.e2e_support import (
    REPO,
    STOP_S,
    WAIT_S,
    _child_env,
    listening,
    running_goods,
    send_scan,
    units,
    write_toml,
)
from tests.helpers import NEW_PID, ORIGINAL_PID
from tests.line_support import leased_gateway
from tests.uplink_support import eventually
from wire import topics
from wire.refusals import RefusalReason
from wire.topics import Result, ScanEvent

STALL_LINES = 2000
STALL_QUEUE = 5
STALL_BOUND_S = 2.0
FIELDS = {
    "time", "work_order", "station", "gateway", "sn", "result", "reason", "message", "advice", "elapsed_ms",
    "retries", "slot", "cert_no", "lease_id", "old_pid", "new_pid", "radio", "request_id",
}  # fmt: skip


async def test_json_lines_carry_the_mes_fields_and_stdout_holds_nothing_else(
    tmp_path: Path, broker: PrivateBroker
) -> None:
    gateway, issuer = await leased_gateway(tmp_path, broker=broker)
    platform_key = load_or_create(tmp_path / "platform")  # the key leased_gateway's platform signs with
    config_file = write_toml(tmp_path / "agent.toml", gateway.settings)
    ok, busy = units(1, "MESOK")[0], units(1, "MESBUSY", fault=Fault.REFUSE)[0]
    async with running_goods(issuer, [ok, busy], gateway.discovery_port), listening(broker, gateway.gw) as (heard, mq):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rebadge.cli", "-v", "agent", "run", "-c", str(config_file), "--json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO, env=_child_env(),
        )  # fmt: skip
        assert proc.stdout is not None
        try:
            await heard.wait_for(lambda t, p: t == topics.status(gateway.gw) and b'"online"' in p, "agent online")
            lines = []
            for n, sn in enumerate([ok.sn, busy.sn, busy.sn]):
                await send_scan(mq, gateway.gw, sn, f"req-{n}", platform_key)
                async with asyncio.timeout(WAIT_S):
                    lines.append(await proc.stdout.readline())
        finally:
            proc.terminate()
            async with asyncio.timeout(STOP_S):
                out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert out == b"", "nothing but scan lines on stdout"
    assert b"ready" in err  # the logs went to stderr
    confirmed, refused, again = (json.loads(line) for line in lines)
    for obj in (confirmed, refused, again):
        assert set(obj) == FIELDS
        assert (obj["work_order"], obj["station"], obj["gateway"]) == ("WO-42", "ST-3", gateway.gw)
        at = datetime.datetime.fromisoformat(obj["time"])
        assert at.tzinfo is not None
        assert abs(at.timestamp() - datetime.datetime.now(datetime.UTC).timestamp()) < 60
        assert isinstance(obj["elapsed_ms"], int)
    assert confirmed["sn"] == ok.sn
    assert (confirmed["result"], confirmed["reason"], confirmed["retries"]) == ("confirmed", "", 0)
    assert isinstance(confirmed["slot"], int)
    assert (confirmed["old_pid"], confirmed["new_pid"], confirmed["request_id"]) == (ORIGINAL_PID, NEW_PID, "req-0")
    assert (refused["sn"], refused["result"], refused["reason"], refused["retries"]) == (
        busy.sn, "refused", "busy", 0,
    )  # fmt: skip
    assert refused["advice"] == ADVICE[RefusalReason.BUSY].action
    assert (again["sn"], again["retries"]) == (busy.sn, 1)


async def _stopped(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_mes_lines_stay_one_line_whatever_the_scanner_read() -> None:
    out = io.StringIO()
    mes = MesLines(parse_config({"line": {"station": "ST-1"}}, "test", env={}), "ab" * 8, out)
    task = asyncio.create_task(mes.run(), name="mes")
    mes.write(ScanEvent(sn='X"\n{"result":"confirmed"}', result=Result.REFUSED, reason=RefusalReason.BAD_SN))
    await eventually(lambda: out.getvalue().endswith("\n"))
    await _stopped(task)
    (line,) = out.getvalue().splitlines()
    obj = json.loads(line)
    assert (obj["result"], obj["sn"], obj["station"]) == ("refused", 'X"\n{"result":"confirmed"}', "ST-1")


async def test_a_mes_that_stops_reading_never_stops_the_agent() -> None:
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "r") as reader, os.fdopen(write_fd, "w") as writer:
        mes = MesLines(parse_config({}, "test", env={}), "ab" * 8, writer, max_queued=STALL_QUEUE)
        task = asyncio.create_task(mes.run(), name="mes")
        started = time.monotonic()
        for n in range(STALL_LINES):  # far more than the pipe holds: its writer thread blocks
            mes.write(ScanEvent(sn=f"SN{n:06d}", result=Result.CONFIRMED, slot=n))
            if n % 50 == 0:
                await asyncio.sleep(0)
        assert time.monotonic() - started < STALL_BOUND_S  # write() never waited for the pipe
        await eventually(lambda: mes.dropped > 0)
        drained = asyncio.create_task(asyncio.to_thread(reader.read), name="drain")
        await _stopped(task)  # what is still queued is written once the pipe is read
        writer.close()
        lines = (await drained).splitlines()
    sns = [json.loads(line)["sn"] for line in lines]
    assert len(sns) == STALL_LINES - mes.dropped
    assert sns == sorted(sns)  # in order, the dropped ones being the oldest of the queue
    assert sns[-1] == f"SN{STALL_LINES - 1:06d}"


async def test_a_mes_that_went_away_ends_the_lines_not_the_agent(caplog: pytest.LogCaptureFixture) -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)  # the MES is gone: writing raises BrokenPipeError
    with os.fdopen(write_fd, "w") as writer:
        mes = MesLines(parse_config({}, "test", env={}), "ab" * 8, writer)
        task = asyncio.create_task(mes.run(), name="mes")
        for n in range(3):
            mes.write(ScanEvent(sn=f"SN{n:06d}", result=Result.CONFIRMED))
        await eventually(lambda: mes.closed)
        mes.write(ScanEvent(sn="SN999999", result=Result.CONFIRMED))
        await _stopped(task)  # no exception on the way out either
        with contextlib.suppress(BrokenPipeError):
            writer.close()
    assert mes.dropped >= 1
    assert any("stdout is gone" in r.getMessage() for r in caplog.records)
