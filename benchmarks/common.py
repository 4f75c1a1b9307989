"""What the benchmarks share: the machine line every figure carries, and writing one section of docs/benchmarks.md."""

from __future__ import annotations

import datetime
import os
import platform
import re
from pathlib import Path

DOC_TITLE = "# Benchmarks"


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
