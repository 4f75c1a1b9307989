"""What the benchmarks share: the machine line every figure carries, and writing one section of docs/benchmarks.md."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import platform
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from wire.keys import PublicKey, SigningKey
from wire.tokens import Certificate, Lease, ProtocolName, sign, token_hash

DOC_TITLE = "# Benchmarks"
BENCH_ISSUER = SigningKey(bytes([1]) * 32)
BENCH_LEASE_ID = "BL1"
BENCH_CERT_NO = "BENCH1"
FAR = 4_000_000_000
SIM_START_TIMEOUT_S = 60.0


def machine() -> str:
    """nproc, CPU model, Python version and the date, as one line."""
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        model = found.group(1).strip() if found else model
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, {when}"


def write_section(doc: Path, section: str, lines: list[str]) -> None:
    """Put `lines` under the `section` heading in `doc` (created with a machine header if missing); other
    sections stay as they are."""
    text = doc.read_text() if doc.exists() else f"{DOC_TITLE}\n\nMachine when this file was started: {machine()}.\n"
    body = "\n".join([section, "", *lines, ""])
    start = text.find(section)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + body
    else:
        end = text.find("\n## ", start + len(section))
        text = text[:start] + body + ("" if end < 0 else text[end:])
    doc.write_text(text)


@asynccontextmanager
async def sim_wifi_goods(
    issuer: PublicKey, prefix: str, units: int, *, pid: str, latency_s: float,
    announce_to: tuple[str, int] | None = None,
) -> AsyncIterator[dict[str, tuple[str, int]]]:  # fmt: skip
    """`units` simulated Wi-Fi goods in a process of their own (`rebadge sim wifi`), as real goods are other
    hardware; yields each SN's address, and stops the process on exit."""
    args = ["--units", str(units), "--prefix", prefix, "--pid", pid, "--issuer-key", issuer.raw.hex()]
    args += ["--latency-ms", str(latency_s * 1000)]
    if announce_to is not None:
        args += ["--announce-to", f"{announce_to[0]}:{announce_to[1]}"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rebadge.cli", "sim", "wifi", *args, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    found: dict[str, tuple[str, int]] = {}
    try:
        async with asyncio.timeout(SIM_START_TIMEOUT_S):
            while (line := (await proc.stdout.readline()).decode().strip()) != "ready":
                if not line:
                    raise RuntimeError("rebadge sim wifi stopped before it was ready")
                unit = json.loads(line)
                found[unit["sn"]] = (unit["host"], unit["port"])
        yield found
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


def bench_tokens(
    gateway: SigningKey, slots: int, *, protocols: tuple[ProtocolName, ...], old: str, new: str,
    cert_no: str = BENCH_CERT_NO,
) -> tuple[Lease, bytes, Certificate, bytes]:  # fmt: skip
    """A certificate of `slots` units and one lease of all of them for `gateway`, signed by the bench issuer."""
    cert = Certificate(
        cert_no=cert_no, factory="bench", original_pid=old, new_pid=new, quantity=slots,
        protocols=protocols, nbf=0, exp=FAR,
    )  # fmt: skip
    cert_token = sign(cert, BENCH_ISSUER)
    lease = Lease(
        lease_id=BENCH_LEASE_ID, cert_no=cert_no, cert_hash=token_hash(cert_token), original_pid=old, new_pid=new,
        gateway_key=gateway.public.raw, gateway_kid=gateway.kid, slot_lo=0, slot_hi=slots, exp=FAR,
    )  # fmt: skip
    return lease, sign(lease, BENCH_ISSUER), cert, cert_token


def ratio_line(units: list[tuple[float, float]]) -> tuple[float, str]:
    """For units given as (wall s, simulated radio s): the wall/radio ratio over all, and a one-line summary."""
    wall = sum(w for w, _ in units)
    radio = sum(r for _, r in units)
    worst = max(w / r for w, r in units)
    text = (
        f"wall {wall / len(units):.3f} s/unit, radio {radio / len(units):.3f} s/unit, "
        f"overhead {(wall - radio) / len(units) * 1000:.1f} ms/unit, ratio {wall / radio:.3f} (worst unit {worst:.3f})"
    )
    return wall / radio, text
