"""A private mosquitto on a free loopback port, for the demo and the tests; it can be stopped and started again."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path

START_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 5.0


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_path() -> str:
    """The mosquitto executable, or a plain error saying how to install it."""
    exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if exe is None:
        raise RuntimeError("mosquitto is not installed; install it with: sudo apt-get install mosquitto")
    return exe


class PrivateBroker:
    """mosquitto with its own config in `workdir`, listening on 127.0.0.1:`port` (MQTT 3.1.1 and 5).

    With `config_file` (e.g. one `rebadge provision broker-config` wrote for `port`) it runs that file instead of
    the plaintext loopback config; the file's listener must be on 127.0.0.1:`port`.
    """

    def __init__(
        self, workdir: Path, port: int | None = None, *, extra_config: str = "", config_file: Path | None = None
    ) -> None:
        self.workdir = workdir
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.extra_config = extra_config
        self.config_file = config_file
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start (or restart on the same port) and wait until it accepts connections."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.config_file or self.workdir / "mosquitto.conf"
        if self.config_file is None:
            # As root, mosquitto drops to the `mosquitto` user unless told otherwise; stay who we are.
            conf.write_text(
                f"listener {self.port} {self.host}\nallow_anonymous true\nuser {getpass.getuser()}\n"
                f"persistence false\nmax_queued_messages 100000\n{self.extra_config}"
            )
        log = (self.workdir / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen([mosquitto_path(), "-c", str(conf)], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited at start; see {self.workdir / 'mosquitto.log'}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
            except OSError:
                time.sleep(0.02)
            else:
                return
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within {START_TIMEOUT_S}s")

    def stop(self) -> None:
        """Stop it (no-op when stopped)."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def __enter__(self) -> PrivateBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
