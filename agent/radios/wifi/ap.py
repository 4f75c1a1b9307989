"""AP mode: a device not yet on the line's network is reached by joining its own access point with NetworkManager.

`nmcli` runs as a child process (never on the event loop thread), bounded by `ap_join_timeout_s`.
"""

from __future__ import annotations

import asyncio
import logging

from agent.config import WifiConfig
from agent.errors import DeviceNotFoundError

log = logging.getLogger(__name__)

KILL_TIMEOUT = 2.0
MAX_STDERR_CHARS = 300


def ap_ssid(config: WifiConfig, sn: str) -> str:
    """The SSID a device with this SN opens in AP mode."""
    return f"{config.ap_ssid_prefix}{sn}"


def join_command(config: WifiConfig, sn: str, nmcli: str = "nmcli") -> list[str]:
    """The nmcli command line that joins the device's access point."""
    # --wait bounds nmcli itself; our own timeout (slightly longer) bounds the process.
    cmd = [
        nmcli,
        "--wait",
        str(max(1, int(config.ap_join_timeout_s))),
        "device",
        "wifi",
        "connect",
        ap_ssid(config, sn),
    ]
    if config.ap_password is not None:
        cmd += ["password", config.ap_password.get_secret_value()]
    if config.ap_interface is not None:
        cmd += ["ifname", config.ap_interface]
    return cmd


async def join_access_point(config: WifiConfig, sn: str, nmcli: str = "nmcli") -> None:
    """Join the device's access point; DeviceNotFoundError when nmcli fails or overruns its timeout."""
    cmd = join_command(config, sn, nmcli)
    ssid = ap_ssid(config, sn)
    log.info("device %s: joining access point %r", sn, ssid)
    try:
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
    except OSError as exc:
        raise DeviceNotFoundError(
            f"device {sn}: cannot run {cmd[0]!r} to join access point {ssid!r} ({exc}); "
            "install NetworkManager or turn wifi.ap_mode off",
            sn=sn,
        ) from exc
    try:
        async with asyncio.timeout(config.ap_join_timeout_s + 1.0):
            _, err = await proc.communicate()
    except TimeoutError as exc:
        await _kill(proc)
        raise DeviceNotFoundError(
            f"device {sn}: joining access point {ssid!r} took over {config.ap_join_timeout_s}s "
            "(wifi.ap_join_timeout_s)",
            sn=sn,
        ) from exc
    except BaseException:
        await _kill(proc)
        raise
    if proc.returncode != 0:
        text = err.decode("utf-8", "replace").strip()[:MAX_STDERR_CHARS]
        raise DeviceNotFoundError(
            f"device {sn}: nmcli could not join access point {ssid!r} (exit {proc.returncode}): {text}", sn=sn
        )


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
        try:
            async with asyncio.timeout(KILL_TIMEOUT):
                await proc.wait()
        except TimeoutError:
            log.warning("nmcli (pid %d) did not exit after kill", proc.pid)
