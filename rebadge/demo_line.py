"""The demo's simulated line: which units stand on it, and the simulated goods plus the agent's radios for them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

from agent.config import AgentConfig
from agent.radios.base import Radio as AgentRadio
from agent.radios.registry import create_radio
from simulator.ble.line import build_ble_line
from simulator.goods import UnitSpec, build_wifi_line
from simulator.zigbee.line import ZigbeeUnit, build_zigbee_line
from wire.device import Firmware, Radio
from wire.keys import KeyRing, PublicKey

ANNOUNCE_INTERVAL_S = 0.05
GENERAL_WIFI_EVERY = 4  # every 4th Wi-Fi unit runs general firmware (PID in the MCU)


def plan_units(units: int, original_pid: str, radios: list[Radio]) -> list[UnitSpec]:
    """`units` finished goods spread over `radios`; with BLE, its first unit runs general firmware (unsupported)."""
    plan: list[UnitSpec] = []
    per_radio: dict[Radio, int] = {}
    for i in range(units):
        radio = radios[i % len(radios)]
        n = per_radio[radio] = per_radio.get(radio, 0) + 1
        firmware = Firmware.OEM
        if radio is Radio.WIFI and len(radios) > 1 and n % GENERAL_WIFI_EVERY == 0:
            firmware = Firmware.GENERAL
        if radio is Radio.BLE and n == 1:
            firmware = Firmware.GENERAL
        plan.append(
            UnitSpec(sn=f"DEMO-{radio.value.upper()}-{n:04d}", pid=original_pid, firmware=firmware, radio=radio)
        )
    return plan


@dataclass
class DemoGoods:
    """Running simulated goods and the agent radios that reach them."""

    plan: list[UnitSpec]
    radios: list[AgentRadio] = field(default_factory=list)

    def scan_order(self) -> Iterator[tuple[str, Radio]]:
        """SNs in the order the technician scans them."""
        for spec in self.plan:
            yield spec.sn, spec.radio


@asynccontextmanager
async def start_goods(plan: list[UnitSpec], issuer: PublicKey, config: AgentConfig) -> AsyncIterator[DemoGoods]:
    """Start the simulated goods of `plan` and build the agent's radios for them; stops everything on exit."""
    issuers = KeyRing([issuer])
    goods = DemoGoods(plan)
    async with AsyncExitStack() as stack:
        wifi = [u for u in plan if u.radio is Radio.WIFI]
        if wifi:
            target = ("127.0.0.1", config.wifi.discovery_port)
            await stack.enter_async_context(
                build_wifi_line(issuers, wifi, announce_to=target, announce_interval=ANNOUNCE_INTERVAL_S)
            )
            goods.radios.append(create_radio(Radio.WIFI, config))
        ble = [u for u in plan if u.radio is Radio.BLE]
        if ble:
            ble_line = build_ble_line(issuers, ble)
            goods.radios.append(create_radio(Radio.BLE, config, **ble_line.radio_kwargs))
        zigbee = [u for u in plan if u.radio is Radio.ZIGBEE]
        if zigbee:
            units = [ZigbeeUnit(sn=u.sn, pid=u.pid, firmware=u.firmware) for u in zigbee]
            goods.radios.append(create_radio(Radio.ZIGBEE, config, **build_zigbee_line(units, issuers).radio_kwargs()))
        yield goods
