"""The simulated Zigbee "air": nodes, per-frame latency, the permit-join window, joins and leaves.

Frames from the coordinator wait one frame time, then are handed to the node with `call_soon` (never inside
the sender); frames from a node wait one frame time in a task the network owns, then reach zigpy through
`packet_received`, again with `call_soon`. `frames` counts every frame on the air and `air_time_s` the time
the air was busy, so a benchmark can tell radio time from overhead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import zigpy.exceptions
import zigpy.state
import zigpy.types as t
import zigpy.zdo.types as zdo_t

from simulator.zigbee.node import LinkFault, SimulatedNode

if TYPE_CHECKING:
    from zigpy.application import ControllerApplication

log = logging.getLogger(__name__)

COORDINATOR_IEEE = t.EUI64.convert("00:12:4b:00:5e:ba:d9:e0")
COORDINATOR_NWK = t.NWK(0x0000)
# A join is association request/response, transport key and device announce.
JOIN_FRAMES = 4
NETWORK_CHANNEL = 15
NETWORK_PAN_ID = 0x5EBA
STOP_TIMEOUT = 2.0
# A node that left looks for a network again after this long (and joins if a permit window is open then).
REJOIN_DELAY_S = 0.2


def formed_network() -> tuple[zigpy.state.NetworkInfo, zigpy.state.NodeInfo]:
    """The network a factory-formed coordinator stick holds in its NVRAM."""
    network_info = zigpy.state.NetworkInfo(
        extended_pan_id=t.ExtendedPanId(bytes.fromhex("010000e0d9ba5e5e")),
        pan_id=t.PanId(NETWORK_PAN_ID),
        nwk_update_id=t.uint8_t(0),
        nwk_manager_id=COORDINATOR_NWK,
        channel=t.uint8_t(NETWORK_CHANNEL),
        channel_mask=t.Channels(1 << NETWORK_CHANNEL),
        security_level=t.uint8_t(5),
        network_key=zigpy.state.Key(key=t.KeyData(bytes(range(16))), seq=t.uint8_t(0)),
    )
    node_info = zigpy.state.NodeInfo(
        nwk=COORDINATOR_NWK,
        ieee=COORDINATOR_IEEE,
        logical_type=zdo_t.LogicalType.Coordinator,
        model="Simulated coordinator",
        manufacturer="rebadge",
    )
    return network_info, node_info


class SimulatedNetwork:
    """Nodes on one PAN and the coordinator app attached to it (one app at a time)."""

    def __init__(
        self, nodes: list[SimulatedNode], *, latency_s: float = 0.0, rejoin_delay_s: float = REJOIN_DELAY_S
    ) -> None:
        self.latency_s = latency_s
        self.rejoin_delay_s = rejoin_delay_s
        self.nodes = {n.ieee: n for n in nodes}
        for node in nodes:
            node.network = self
        self.nvram: tuple[zigpy.state.NetworkInfo, zigpy.state.NodeInfo] | None = formed_network()
        self.frames = 0
        self.air_time_s = 0.0
        self._busy_until = 0.0
        self.app: ControllerApplication | None = None
        self._permit_until = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- life cycle ---------------------------------------------------------------------------------------

    def attach(self, app: ControllerApplication) -> None:
        """Connect a coordinator app (the radio's serial port opening)."""
        if self.app is not None and self.app is not app:
            raise RuntimeError("the simulated network already has a coordinator attached")
        self.app = app

    async def detach(self) -> None:
        """Disconnect the app; cancel and await every task the network started."""
        self.app = None
        self._permit_until = 0.0
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            async with asyncio.timeout(STOP_TIMEOUT):
                await asyncio.gather(*tasks, return_exceptions=True)

    def now(self) -> float:
        """The event loop's clock."""
        return asyncio.get_running_loop().time()

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run `coro` in a task owned by the network (cancelled at `detach`)."""
        if self.app is None:
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("simulated zigbee task %s failed", task.get_name(), exc_info=task.exception())

    async def _air(self, frames: int = 1) -> None:
        """Frames on the air; `air_time_s` adds up the time the air was busy.

        A frame counts from its start until the simulated radio is done with it, timer lateness included
        (the event loop wakes a sleeper up to a millisecond late): that is the simulator's time, not the agent's.
        """
        self.frames += frames
        start = self.now()
        self._busy(start, start + self.latency_s * frames)
        await asyncio.sleep(self.latency_s * frames)
        self._busy(start, self.now())

    def _busy(self, start: float, end: float) -> None:
        self.air_time_s += max(0.0, end - max(start, self._busy_until))
        self._busy_until = max(self._busy_until, end)

    # --- the coordinator's side ---------------------------------------------------------------------------

    async def transmit(self, packet: t.ZigbeePacket) -> None:
        """Carry one frame from the coordinator; DeliveryError when no APS ACK comes back."""
        assert packet.dst is not None
        mode = packet.dst.addr_mode
        if mode == t.AddrMode.Broadcast:
            await self._air()
            self._on_broadcast(packet)
            return
        if mode == t.AddrMode.Group:
            await self._air()
            return
        if packet.dst.address in (COORDINATOR_NWK, COORDINATOR_IEEE):
            return
        node = self._node_at(packet.dst)
        await self._air()
        if node is None or not node.joined:
            raise zigpy.exceptions.DeliveryError(
                f"no node at {packet.dst.address} answers (MAC no ACK)", status=t.MACStatus.MAC_NO_ACK
            )
        deliver, ack = node.on_downlink(packet)
        if deliver:
            self._deliver_down(node, packet)
        if not ack:
            raise zigpy.exceptions.DeliveryError(
                f"node {node.sn} did not acknowledge the frame (APS no ACK)", status=t.APSStatus.APS_NO_ACK
            )

    def _deliver_down(self, node: SimulatedNode, packet: t.ZigbeePacket) -> None:
        loop = asyncio.get_running_loop()
        loop.call_soon(node.receive, packet)
        if node.faults.fault is LinkFault.DUPLICATE:
            loop.call_soon(node.receive, packet)

    def _node_at(self, address: t.AddrModeAddress) -> SimulatedNode | None:
        if address.addr_mode == t.AddrMode.IEEE and isinstance(address.address, t.EUI64):
            return self.nodes.get(address.address)
        for node in self.nodes.values():
            if node.nwk == address.address:
                return node
        return None

    def _on_broadcast(self, packet: t.ZigbeePacket) -> None:
        if packet.profile_id != 0 or packet.cluster_id != zdo_t.ZDOCmd.Mgmt_Permit_Joining_req:
            return
        data = packet.data.serialize()
        _, rest = t.uint8_t.deserialize(data)
        duration, _ = t.uint8_t.deserialize(rest)
        self.permit(int(duration))

    def permit(self, time_s: int) -> None:
        """Open (or with 0, close) the permit-join window; nodes off the network join while it is open."""
        if time_s <= 0:
            self._permit_until = 0.0
            return
        self._permit_until = max(self._permit_until, self.now() + time_s)
        for node in self.nodes.values():
            self._start_join(node)

    def _start_join(self, node: SimulatedNode) -> None:
        if not node.joined and not node.joining:
            node.joining = True
            self.spawn(self._join(node), f"zigbee-join-{node.sn}")

    def permitting(self) -> bool:
        """Whether the permit-join window is open now."""
        return self.now() < self._permit_until

    async def _join(self, node: SimulatedNode) -> None:
        """Association and key transport, then the node's Device_annce, from which zigpy learns of it."""
        try:
            await asyncio.sleep(max(0.0, node.rejoin_after - self.now()))
            await self._air(JOIN_FRAMES - 1)
            if self.app is None or not self.permitting():
                return
            node.joined = True
            log.info("zigbee node %s joined as 0x%04x", node.sn, node.nwk)
            await self.uplink(node, node.device_announce())
        finally:
            node.joining = False

    # --- the nodes' side ----------------------------------------------------------------------------------

    async def uplink(self, node: SimulatedNode, packet: t.ZigbeePacket) -> None:
        """Carry one frame from a node to the coordinator (one frame time, then `packet_received`)."""
        await self._air()
        app = self.app
        if app is None or not node.joined:
            return
        loop = asyncio.get_running_loop()
        loop.call_soon(app.packet_received, packet)
        if node.faults.fault is LinkFault.DUPLICATE:
            loop.call_soon(app.packet_received, packet)

    def leave(self, node: SimulatedNode) -> None:
        """The node leaves the network (and joins again, after a while, when a permit window is open)."""
        if not node.joined:
            return
        node.left()
        node.rejoin_after = self.now() + self.rejoin_delay_s
        log.info("zigbee node %s left the network", node.sn)
        if self.app is not None:
            asyncio.get_running_loop().call_soon(self.app.handle_leave, node.nwk, node.ieee)
            if self.permitting():
                self._start_join(node)

    def add(self, node: SimulatedNode) -> None:
        """A node powered on near the coordinator: it joins now if a permit window is open, else at the next."""
        if node.ieee in self.nodes:
            raise ValueError(f"a node with IEEE {node.ieee} ({node.sn}) is already on the network")
        node.network = self
        self.nodes[node.ieee] = node
        if self.app is not None and self.permitting():
            self._start_join(node)

    def remove(self, node: SimulatedNode) -> None:
        """A node powered off and carried away: it just goes silent, as a real one would."""
        node.left()
        self.nodes.pop(node.ieee, None)

    def forget(self, ieee: t.EUI64) -> None:
        """The coordinator removed the node."""
        node = self.nodes.get(ieee)
        if node is not None:
            node.left()
