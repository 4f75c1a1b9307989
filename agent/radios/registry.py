"""Maps a radio kind to its driver, importing the driver only in its own branch.

A gateway without bleak or zigpy installed still starts, as long as its config does not ask for that radio.
"""

from __future__ import annotations

from typing import Any

from agent.config import AgentConfig
from agent.errors import ConfigError
from agent.radios.base import Radio
from wire.device import Radio as RadioKind

# The library each radio's driver imports first (checked before the agent starts: agent.config_check).
RADIO_LIBRARIES = {RadioKind.BLE: "bleak", RadioKind.ZIGBEE: "zigpy"}


def create_radio(kind: RadioKind, config: AgentConfig, **driver_kwargs: Any) -> Radio:
    """The driver for `kind`, configured from `config`; tests pass simulated hardware in `driver_kwargs`."""
    try:
        if kind is RadioKind.WIFI:
            from agent.radios.wifi.radio import WifiRadio  # noqa: PLC0415 - lazy by design

            return WifiRadio(config.wifi, **driver_kwargs)
        if kind is RadioKind.BLE:
            from agent.radios.ble.radio import BleRadio  # noqa: PLC0415

            return BleRadio(config.ble, **driver_kwargs)
        if kind is RadioKind.ZIGBEE:
            from agent.radios.zigbee.radio import ZigbeeRadio  # noqa: PLC0415

            return ZigbeeRadio(config.zigbee, state_dir=config.gateway.state_dir, **driver_kwargs)
    except ImportError as exc:
        raise library_missing(kind, exc.name) from exc
    raise ConfigError(f"line.radios: unknown radio {kind!r}")


def library_missing(kind: RadioKind, module: str | None) -> ConfigError:
    """The error for a radio whose library is not installed, naming the extra that installs it."""
    return ConfigError(
        f"line.radios lists {kind.value!r} but its library is not installed ({module}); "
        f"install it from the rebadge checkout: pip install '.[{kind.value}]' (or provisioning/install.sh "
        f"--extras {kind.value})"
    )
