"""docs/deploy.md, run: its `sh deploy` blocks in order in one bash, against a real `rebadge cloud serve`, a real
mosquitto with the mTLS configuration the guide writes, simulated Wi-Fi goods and a socat scanner, on free ports in
a temporary directory; each block's answer in the guide is checked loosely against what the commands printed."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rebadge.broker import free_port

pytestmark = pytest.mark.slow

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "deploy.md"
BLOCK_TIMEOUT_S = 90.0  # the waits in the guide give up after 60 s
STOP_TIMEOUT_S = 10.0
END = "__deploy_block_done__"
FENCE = re.compile(r"^```(?P<info>[^\n]*)\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)
ELIDED = "..."
NEEDED = ("mosquitto", "socat", "curl", "jq")
GUIDE_COVERS = (
    "cloud init", "broker-config", "cloud serve", "/orgs", "/accounts", "/stage", "/certificates", "/audit",
    "/enrolment-tokens", "provision enrol", "request-lease", "sim wifi", "agent run", "agent status", "cloud status",
)  # fmt: skip


@dataclass(frozen=True)
class Step:
    """One `sh deploy` block, with the answer block that follows it (if any)."""

    line: int
    commands: str
    answer: str | None = None
    answer_kind: str = ""


def steps_of(text: str) -> list[Step]:
    """The guide's `sh deploy` blocks in order, each with the `text answer` / `json answer` right after it."""
    found: list[Step] = []
    for m in FENCE.finditer(text):
        info, body, line = m.group("info").split(), m.group("body"), text.count("\n", 0, m.start()) + 1
        if info == ["sh", "deploy"]:
            found.append(Step(line, body))
        elif len(info) == 2 and info[1] == "answer" and info[0] in {"text", "json"}:
            assert found, f"docs/deploy.md:{line}: an answer with no command above it"
            assert found[-1].answer is None, f"docs/deploy.md:{line}: two answers to one command block"
            found[-1] = Step(found[-1].line, found[-1].commands, body, info[0])
    return found


def pattern_of(expected: str) -> re.Pattern[str]:
    """A line of an answer: literal text, `...` for anything."""
    return re.compile(".*".join(re.escape(part) for part in expected.split(ELIDED)))


def check_text(step: Step, output: str) -> None:
    """Every line of the answer matches a line of the output, in order."""
    assert step.answer is not None
    lines = iter(output.splitlines())
    for expected in (e.strip() for e in step.answer.splitlines() if e.strip()):
        pattern = pattern_of(expected)
        assert any(pattern.fullmatch(got.strip()) for got in lines), (
            f"docs/deploy.md:{step.line}: no line like {expected!r} (in order) in:\n{output}"
        )


def check_json(step: Step, output: str) -> None:
    """The output is JSON holding every key of the answer, with its value (`...` in a string: anything)."""
    assert step.answer is not None
    try:
        got = json.loads(output)
    except json.JSONDecodeError:
        pytest.fail(f"docs/deploy.md:{step.line}: the answer is not JSON:\n{output}")
    _same(json.loads(step.answer), got, f"docs/deploy.md:{step.line}", output)


def _same(expected: object, got: object, where: str, output: str) -> None:
    if isinstance(expected, dict):
        assert isinstance(got, dict), f"{where}: expected an object, got {got!r}"
        for key, value in expected.items():
            assert key in got, f"{where}: no {key!r} in the answer:\n{output}"
            _same(value, got[key], f"{where} {key}", output)
    elif isinstance(expected, str) and ELIDED in expected:
        assert isinstance(got, str), f"{where}: expected text, got {got!r}"
        assert pattern_of(expected).fullmatch(got), f"{where}: {got!r} is not like {expected!r}"
    else:
        assert got == expected, f"{where}: {got!r}, the guide says {expected!r}\n{output}"


class GuideShell:
    """One bash the guide's blocks run in, as in one terminal; its background jobs share its process group."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def run(self, step: Step) -> str:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        # The marker on a line of its own, even after output that does not end its last line.
        self.proc.stdin.write(f"{step.commands}\nprintf '\\n%s %s\\n' {END} $?\n".encode())
        await self.proc.stdin.drain()
        lines: list[str] = []
        try:
            async with asyncio.timeout(BLOCK_TIMEOUT_S):
                while True:
                    raw = await self.proc.stdout.readline()
                    if not raw:
                        pytest.fail(f"docs/deploy.md:{step.line}: the shell exited:\n{''.join(lines)}")
                    line = raw.decode(errors="replace")
                    if line.startswith(END):
                        code = int(line.split()[1])
                        assert code == 0, f"docs/deploy.md:{step.line}: exit {code}:\n{''.join(lines)}"
                        return "".join(lines)
                    lines.append(line)
        except TimeoutError:
            pytest.fail(f"docs/deploy.md:{step.line}: no end within {BLOCK_TIMEOUT_S} s:\n{''.join(lines)}")

    async def stop(self) -> None:
        """SIGTERM to the shell and everything it started (agent, platform, broker, goods), then SIGKILL."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await self.proc.wait()
                await _group_gone(self.proc.pid)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()


async def _group_gone(pgid: int) -> None:
    """Wait until no process of the group is left (the caller bounds the wait)."""
    for _ in itertools.count():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def guide_shell(workdir: Path) -> AsyncIterator[GuideShell]:
    bin_dir = str(Path(sys.executable).parent)
    env = {
        "PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(workdir),
        "WORK": str(workdir / "bench"),
        "HTTP_PORT": str(free_port()),
        "MQTT_PORT": str(free_port()),
        "DISCOVERY_PORT": str(free_port()),
        "LANG": "C.UTF-8",
    }
    proc = await asyncio.create_subprocess_exec(
        "bash", "--noprofile", "--norc", "-eu", "-o", "pipefail",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        cwd=workdir, env=env, start_new_session=True,
    )  # fmt: skip
    shell = GuideShell(proc)
    try:
        yield shell
    finally:
        await shell.stop()


def test_the_guide_has_commands_and_answers() -> None:
    steps = steps_of(GUIDE.read_text())
    assert len(steps) >= 20
    assert sum(s.answer is not None for s in steps) >= 15
    text = "".join(s.commands for s in steps)
    for command in GUIDE_COVERS:
        assert command in text, command


@pytest.mark.skipif(
    any(shutil.which(tool, path=f"/usr/sbin:{os.environ.get('PATH', '')}") is None for tool in NEEDED),
    reason=f"the guide needs {', '.join(NEEDED)} (./setup.sh test installs them)",
)
async def test_the_guide_runs_as_written(tmp_path: Path) -> None:
    async with guide_shell(tmp_path) as shell:
        for step in steps_of(GUIDE.read_text()):
            output = await shell.run(step)
            if step.answer_kind == "text":
                check_text(step, output)
            elif step.answer_kind == "json":
                check_json(step, output)


def test_an_answer_that_differs_from_the_output_fails() -> None:
    text = '```sh deploy\necho hi\n```\n\n```json answer\n{"replaced": 3, "pid": "p..."}\n```\n'
    (step,) = steps_of(text)
    check_json(step, '{"replaced": 3, "pid": "p0000001", "more": 1}')
    for wrong in ('{"replaced": 2, "pid": "p1"}', '{"pid": "p1"}', '{"replaced": 3, "pid": "x1"}', "replaced 3"):
        with pytest.raises((AssertionError, pytest.fail.Exception)):
            check_json(step, wrong)
    (lines,) = steps_of("```sh deploy\ntrue\n```\n```text answer\nwrote .../a\nrun: ...\n```\n")
    check_text(lines, "noise\nwrote /tmp/x/a\nrun: mosquitto -c f\n")
    with pytest.raises(AssertionError):
        check_text(lines, "run: mosquitto\nwrote /tmp/x/a\n")  # out of order


COMMAND = re.compile(r"(?:^|[\s(])rebadge((?: -v)?(?: [a-z][a-z-]*)+)((?: [^\n|;&>]*)?)", re.MULTILINE)
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z-]*)")


INLINE = re.compile(r"`([^`\n]+)`")


def code_of(text: str) -> str:
    """The page's shell blocks and inline code spans, one per line (prose left out)."""
    blocks = [m.group("body") for m in FENCE.finditer(text) if m.group("info").split()[:1] == ["sh"]]
    outside = FENCE.sub("", text)
    code = "\n".join([*blocks, *INLINE.findall(outside)]).replace("\\\n", " ")
    return re.sub(r"sudo -u \S+ ", "", code)  # the user is named rebadge too


def commands_named(text: str) -> list[tuple[list[str], list[str]]]:
    """Every `rebadge SUB ... --opt` the page names, in code blocks and inline code: its words and its options."""
    named = []
    for m in COMMAND.finditer(code_of(text)):
        words = [w for w in m.group(1).split() if w != "-v"]
        named.append((words, OPTION.findall(m.group(2))))
    return named


def test_every_command_and_option_the_guide_names_exists() -> None:
    """Also those the test cannot run (the services' own command lines, the install script's options)."""
    from click.testing import CliRunner  # noqa: PLC0415

    from rebadge.cli import main  # noqa: PLC0415

    text = GUIDE.read_text()
    named = commands_named(text)
    assert len(named) >= 15
    for words, options in named:
        helped = CliRunner().invoke(main, [*words, "--help"])
        assert helped.exit_code == 0, (words, helped.output)
        assert words[-1] in helped.output.lower() or "Usage" in helped.output
        for option in options:
            assert option in helped.output, f"'rebadge {' '.join(words)}' has no {option}"
    install_help = (GUIDE.parent.parent / "provisioning" / "install.sh").read_text()
    for option in set(re.findall(r"install\.sh[^`\n]*", text)):
        for flag in OPTION.findall(option):
            assert f"#   {flag}" in install_help or f"{flag})" in install_help, flag
