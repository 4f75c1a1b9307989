"""A zigpy ControllerApplication whose "radio" is a simulated network instead of a serial coordinator.

It implements the 11 hardware steps zigpy leaves to radio libraries (bellows, zigpy-znp, ...); everything
else (join handling, interview, request matching, the database) is zigpy's own code. The network object
travels in the app config under SIMULATED_NETWORK_KEY (zigpy's schema keeps extra keys).
"""

from __future__ import annotations

import logging
from typing import Any

import zigpy.application
import zigpy.config
import zigpy.endpoint
import zigpy.exceptions
import zigpy.profiles.zha
import zigpy.state
import zigpy.types as t
import zigpy.zdo.types as zdo_t
from zigpy.device import ZigbeeDevice

from simulator.zigbee.network import NETWORK_CHANNEL, SimulatedNetwork

log = logging.getLogger(__name__)

SIMULATED_NETWORK_KEY = "rebadge_simulated_network"
SIMULATED_DEVICE_PATH = "/dev/simulated-zigbee"


def quiet_app_config(network: SimulatedNetwork) -> dict[str, Any]:
    """zigpy config for a simulated coordinator: no OTA, backups, topology scans or watchdog (tasks would linger)."""
    return {
        SIMULATED_NETWORK_KEY: network,
        zigpy.config.CONF_DEVICE: {zigpy.config.CONF_DEVICE_PATH: SIMULATED_DEVICE_PATH},
        zigpy.config.CONF_OTA: {zigpy.config.CONF_OTA_ENABLED: False},
        # A blank stick forms its network on this channel instead of scanning for the quietest one.
        zigpy.config.CONF_NWK: {zigpy.config.CONF_NWK_CHANNEL: NETWORK_CHANNEL},
        zigpy.config.CONF_NWK_BACKUP_ENABLED: False,
        zigpy.config.CONF_TOPO_SCAN_ENABLED: False,
        zigpy.config.CONF_WATCHDOG_ENABLED: False,
        # Commit each write at once: nothing waits in a timer task at shutdown.
        zigpy.config.CONF_DB_COMMIT_INTERVAL: 0,
    }


class SimulatedControllerApp(zigpy.application.ControllerApplication):
    """zigpy's coordinator application over a SimulatedNetwork."""

    def _network(self) -> SimulatedNetwork:
        network = self.config.get(SIMULATED_NETWORK_KEY)
        if not isinstance(network, SimulatedNetwork):
            raise zigpy.exceptions.ControllerException(
                f"app config key {SIMULATED_NETWORK_KEY!r} must hold a SimulatedNetwork; "
                "build the config with simulator.zigbee.build_zigbee_line"
            )
        return network

    async def connect(self) -> None:
        """Open the simulated coordinator."""
        self._network().attach(self)

    async def disconnect(self) -> None:
        """Close it; the network cancels the tasks it started."""
        await self._network().detach()

    async def start_network(self) -> None:
        """Register the coordinator as zigpy's own device, as radio libraries do."""
        await self.load_network_info(load_devices=False)
        node = self.state.node_info
        coordinator = self.add_device(ieee=node.ieee, nwk=node.nwk)
        coordinator.node_desc = zdo_t.NodeDescriptor(
            logical_type=zdo_t.LogicalType.Coordinator,
            complex_descriptor_available=0,
            user_descriptor_available=0,
            reserved=0,
            aps_flags=0,
            frequency_band=zdo_t.NodeDescriptor.FrequencyBand.Freq2400MHz,
            mac_capability_flags=zdo_t.NodeDescriptor.MACCapabilityFlags.AllocateAddress,
            manufacturer_code=0x0000,
            maximum_buffer_size=82,
            maximum_incoming_transfer_size=82,
            server_mask=0,
            maximum_outgoing_transfer_size=82,
            descriptor_capability_field=zdo_t.NodeDescriptor.DescriptorCapability.NONE,
        )
        endpoint = coordinator.add_endpoint(1)
        endpoint.status = zigpy.endpoint.Status.ZDO_INIT
        endpoint.profile_id = zigpy.profiles.zha.PROFILE_ID
        endpoint.device_type = zigpy.profiles.zha.DeviceType.IAS_CONTROL
        coordinator.model = node.model or "Simulated coordinator"
        coordinator.manufacturer = node.manufacturer or "rebadge"

    async def force_remove(self, dev: ZigbeeDevice) -> None:
        """Drop a node from the simulated network."""
        self._network().forget(dev.ieee)

    async def add_endpoint(self, descriptor: zdo_t.SimpleDescriptor) -> None:
        """Endpoints of the coordinator need no registration here."""

    async def permit_ncp(self, time_s: int = 60) -> None:
        """Open the coordinator's own permit-join window."""
        self._network().permit(time_s)

    async def permit_with_link_key(self, node: t.EUI64, link_key: t.KeyData, time_s: int = 60) -> None:
        """Install codes are not simulated: a plain permit window."""
        self._network().permit(time_s)

    async def reset_network_info(self) -> None:
        """Leave the network: the stick forgets it."""
        self._network().nvram = None

    async def write_network_info(
        self, *, network_info: zigpy.state.NetworkInfo, node_info: zigpy.state.NodeInfo
    ) -> None:
        """Store network settings in the simulated stick."""
        self._network().nvram = (network_info, node_info)

    async def load_network_info(self, *, load_devices: bool = False) -> None:
        """Read network settings from the simulated stick."""
        nvram = self._network().nvram
        if nvram is None:
            raise zigpy.exceptions.NetworkNotFormed("the simulated coordinator holds no network")
        self.state.network_info, self.state.node_info = nvram

    async def send_packet(self, packet: t.ZigbeePacket) -> None:
        """Put one frame on the simulated air, under zigpy's concurrency limit."""
        async with self._limit_concurrency(priority=packet.priority):
            await self._network().transmit(packet)
