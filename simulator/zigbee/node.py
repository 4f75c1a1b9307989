"""One simulated Zigbee good: answers the real ZDO interview, Basic reads and our rebadge cluster.

The node speaks zigpy's own wire types (ZDO and ZCL serialisation), so the coordinator side runs zigpy's
real join, interview and request matching against it. Device-protocol messages are handed to the shared
reference firmware (`simulator.firmware.Firmware`); this module only carries their chunks.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import zigpy.profiles.zha
import zigpy.types as t
import zigpy.zdo.types as zdo_t
from zigpy.zcl import foundation

from simulator.firmware import Firmware
from wire import zigbee_chunks as zc

if TYPE_CHECKING:
    from simulator.zigbee.network import SimulatedNetwork

log = logging.getLogger(__name__)

ENDPOINT_ID = 1
BASIC_CLUSTER_ID = 0x0000
MODEL_ID = "rebadge-sim-plug"
ZCL_STRING = foundation.DataTypeId.string
ZCL_UINT8 = foundation.DataTypeId.uint8
ZCL_ENUM8 = foundation.DataTypeId.enum8
POWER_SOURCE_MAINS = 0x01
ZCL_VERSION = 8


class LinkFault(StrEnum):
    """Radio-level misbehaviour of a simulated Zigbee node, applied to multi-chunk (rebadge) requests."""

    NONE = "none"
    NO_ACK = "no_ack"  # no APS ACK for any chunk of the request: nothing of it reaches the device
    NO_ACK_LAST_CHUNK = "no_ack_last_chunk"  # the whole request arrives and is handled; the last ACK is lost
    LEAVE_MID_TRANSFER = "leave_mid_transfer"  # leaves the network after the request's first chunk
    LEAVE_AFTER_APPLY = "leave_after_apply"  # handles the request, then leaves instead of answering
    DUPLICATE = "duplicate"  # every frame, both ways, is delivered twice


@dataclass
class LinkFaults:
    """Which link fault a node shows, for how many rebadge requests (None = always)."""

    fault: LinkFault = LinkFault.NONE
    times: int | None = 1
    hits: int = field(default=0, init=False)
    _msgs: set[int] = field(default_factory=set, init=False)

    def applies(self, msg: int, fault: LinkFault) -> bool:
        """Whether `fault` hits message `msg` (counting a newly hit message down)."""
        if self.fault is not fault:
            return False
        if msg in self._msgs:
            return True
        if self.times is not None and self.hits >= self.times:
            return False
        self.hits += 1
        self._msgs.add(msg)
        return True


def answer_header(tsn: int, command_id: int, *, general: bool, manufacturer: int | None = None) -> foundation.ZCLHeader:
    """A server-to-client ZCL header that asks for no Default Response."""
    frame_type = foundation.FrameType.GLOBAL_COMMAND if general else foundation.FrameType.CLUSTER_COMMAND
    control = foundation.FrameControl(
        frame_type=frame_type,
        is_manufacturer_specific=manufacturer is not None,
        direction=foundation.Direction.Server_to_Client,
        disable_default_response=True,
        reserved=0,
    )
    code = None if manufacturer is None else t.uint16_t(manufacturer)
    return foundation.ZCLHeader(frame_control=control, manufacturer=code, tsn=tsn, command_id=command_id)


def ieee_for(sn: str) -> t.EUI64:
    """A stable IEEE address for a serial number (so the zigpy database recognises the node again)."""
    return t.EUI64(hashlib.sha256(b"rebadge-zigbee:" + sn.encode()).digest()[:8])


class SimulatedNode:
    """A mains-powered router with one endpoint: Basic plus our manufacturer-specific cluster."""

    def __init__(
        self,
        firmware: Firmware,
        nwk: int,
        *,
        prefix: str = zc.DEFAULT_MANUFACTURER_PREFIX,
        faults: LinkFaults | None = None,
        chunk_bytes: int = zc.DEFAULT_CHUNK_BYTES,
    ) -> None:
        self.firmware = firmware
        self.sn = firmware.state.sn
        self.ieee = ieee_for(self.sn)
        self.nwk = t.NWK(nwk)
        self.prefix = prefix
        self.faults = faults or LinkFaults()
        self.chunk_bytes = chunk_bytes
        self.joined = False
        self.joining = False
        self.rejoin_after = 0.0
        # A Basic attribute that lags the firmware (a broken device): ManufacturerName reads this instead.
        self.stale_manufacturer_name: str | None = None
        self.network: SimulatedNetwork | None = None
        self._reassembler = zc.Reassembler()
        self._tsn = 0

    @property
    def manufacturer_name(self) -> str:
        """Basic ManufacturerName: prefix + current PID (changes when a rebadge is applied)."""
        if self.stale_manufacturer_name is not None:
            return self.stale_manufacturer_name
        return zc.manufacturer_name(self.firmware.state.pid, self.prefix)

    def left(self) -> None:
        """Off the network: what was half received is lost."""
        self.joined = False
        self._reassembler = zc.Reassembler()

    def next_tsn(self) -> int:
        """The node's own ZCL transaction number for frames it originates."""
        self._tsn = (self._tsn + 1) % 256
        return self._tsn

    # --- downlink: what the coordinator sends -------------------------------------------------------------

    def on_downlink(self, packet: t.ZigbeePacket) -> tuple[bool, bool]:
        """Whether a frame addressed to this node is delivered, and whether its APS ACK comes back."""
        chunk = self._request_chunk_of(packet)
        if chunk is None or chunk.count < 2:
            return True, True
        if self.faults.applies(chunk.msg, LinkFault.NO_ACK):
            return False, False
        last = chunk.index == chunk.count - 1
        if last and self.faults.applies(chunk.msg, LinkFault.NO_ACK_LAST_CHUNK):
            return True, False
        return True, True

    def receive(self, packet: t.ZigbeePacket) -> None:
        """Handle one delivered frame (called from the event loop, never inside the sender)."""
        try:
            if packet.dst_ep == 0 and packet.profile_id == 0:
                self._on_zdo(packet)
            elif packet.cluster_id == BASIC_CLUSTER_ID:
                self._on_basic(packet)
            elif packet.cluster_id == zc.CLUSTER_ID:
                self._on_rebadge_cluster(packet)
        except (ValueError, KeyError) as exc:
            log.info("zigbee node %s: ignoring a frame it cannot parse: %s", self.sn, exc)

    def _request_chunk_of(self, packet: t.ZigbeePacket) -> zc.Chunk | None:
        if packet.cluster_id != zc.CLUSTER_ID or packet.dst_ep != ENDPOINT_ID:
            return None
        try:
            hdr, rest = foundation.ZCLHeader.deserialize(packet.data.serialize())
            if not hdr.frame_control.is_cluster or hdr.command_id != zc.REQUEST_CHUNK_COMMAND:
                return None
            raw, _ = t.LVBytes.deserialize(rest)
            return zc.decode_chunk(raw)
        except ValueError:
            return None

    # --- ZDO: the interview -------------------------------------------------------------------------------

    def _on_zdo(self, packet: t.ZigbeePacket) -> None:
        data = packet.data.serialize()
        cmd = zdo_t.ZDOCmd(packet.cluster_id)
        if cmd not in zdo_t.CLUSTERS:
            return
        tsn, rest = t.uint8_t.deserialize(data)
        _, schema = zdo_t.CLUSTERS[cmd]
        args, _ = t.deserialize(rest, schema)
        answer = self._zdo_answer(cmd, args)
        if answer is None:
            return
        rsp_cmd, values = answer
        _, rsp_schema = zdo_t.CLUSTERS[rsp_cmd]
        payload = t.uint8_t(tsn).serialize() + t.serialize(values, rsp_schema)
        self._send(profile=0, cluster=rsp_cmd, endpoint=0, tsn=tsn, data=payload)
        if cmd == zdo_t.ZDOCmd.Mgmt_Leave_req and self.network is not None:
            self.network.leave(self)

    def _zdo_answer(self, cmd: zdo_t.ZDOCmd, args: list[Any]) -> tuple[zdo_t.ZDOCmd, list[Any]] | None:
        ok = zdo_t.Status.SUCCESS
        if cmd == zdo_t.ZDOCmd.Node_Desc_req:
            return zdo_t.ZDOCmd.Node_Desc_rsp, [ok, self.nwk, self.node_descriptor()]
        if cmd == zdo_t.ZDOCmd.Active_EP_req:
            return zdo_t.ZDOCmd.Active_EP_rsp, [ok, self.nwk, [ENDPOINT_ID]]
        if cmd == zdo_t.ZDOCmd.Simple_Desc_req:
            if args[1] != ENDPOINT_ID:
                return zdo_t.ZDOCmd.Simple_Desc_rsp, [zdo_t.Status.NOT_ACTIVE, self.nwk, None]
            return zdo_t.ZDOCmd.Simple_Desc_rsp, [ok, self.nwk, self.simple_descriptor()]
        if cmd == zdo_t.ZDOCmd.Mgmt_Leave_req:
            return zdo_t.ZDOCmd.Mgmt_Leave_rsp, [ok]
        return None

    def node_descriptor(self) -> zdo_t.NodeDescriptor:
        """A mains-powered router made by the holder of our manufacturer code."""
        flags = zdo_t.NodeDescriptor.MACCapabilityFlags
        return zdo_t.NodeDescriptor(
            logical_type=zdo_t.LogicalType.Router,
            complex_descriptor_available=0,
            user_descriptor_available=0,
            reserved=0,
            aps_flags=0,
            frequency_band=zdo_t.NodeDescriptor.FrequencyBand.Freq2400MHz,
            mac_capability_flags=flags.FullFunctionDevice
            | flags.MainsPowered
            | flags.RxOnWhenIdle
            | flags.AllocateAddress,
            manufacturer_code=zc.MANUFACTURER_CODE,
            maximum_buffer_size=82,
            maximum_incoming_transfer_size=82,
            server_mask=0,
            maximum_outgoing_transfer_size=82,
            descriptor_capability_field=zdo_t.NodeDescriptor.DescriptorCapability.NONE,
        )

    def simple_descriptor(self) -> zdo_t.SizePrefixedSimpleDescriptor:
        """Endpoint 1: a smart plug with Basic and our rebadge cluster."""
        return zdo_t.SizePrefixedSimpleDescriptor(
            endpoint=ENDPOINT_ID,
            profile=zigpy.profiles.zha.PROFILE_ID,
            device_type=zigpy.profiles.zha.DeviceType.SMART_PLUG,
            device_version=1,
            input_clusters=[BASIC_CLUSTER_ID, zc.CLUSTER_ID],
            output_clusters=[],
        )

    # --- ZCL Basic: ManufacturerName carries the PID -----------------------------------------------------

    def _basic_attributes(self) -> dict[int, foundation.TypeValue]:
        return {
            0x0000: foundation.TypeValue(type=ZCL_UINT8, value=t.uint8_t(ZCL_VERSION)),
            0x0004: foundation.TypeValue(type=ZCL_STRING, value=t.CharacterString(self.manufacturer_name)),
            0x0005: foundation.TypeValue(type=ZCL_STRING, value=t.CharacterString(MODEL_ID)),
            0x0007: foundation.TypeValue(type=ZCL_ENUM8, value=t.enum8(POWER_SOURCE_MAINS)),
            0x000D: foundation.TypeValue(type=ZCL_STRING, value=t.CharacterString(self.sn)),
        }

    def _on_basic(self, packet: t.ZigbeePacket) -> None:
        hdr, rest = foundation.ZCLHeader.deserialize(packet.data.serialize())
        if not hdr.frame_control.is_general or hdr.command_id != foundation.GeneralCommand.Read_Attributes:
            return
        request, _ = foundation.GENERAL_COMMANDS[foundation.GeneralCommand.Read_Attributes].schema.deserialize(rest)
        known = self._basic_attributes()
        records = []
        for attrid in getattr(request, "attribute_ids", []):
            if attrid in known:
                records.append(foundation.ReadAttributeRecord(attrid=attrid, value=known[attrid]))
            else:
                unsupported = foundation.Status.UNSUPPORTED_ATTRIBUTE
                records.append(foundation.ReadAttributeRecord(attrid=attrid, status=unsupported))
        rsp_id = foundation.GeneralCommand.Read_Attributes_rsp
        rsp = foundation.GENERAL_COMMANDS[rsp_id].schema(status_records=records)
        rsp_hdr = answer_header(hdr.tsn, rsp_id, general=True)
        self._send(
            profile=zigpy.profiles.zha.PROFILE_ID,
            cluster=BASIC_CLUSTER_ID,
            endpoint=ENDPOINT_ID,
            tsn=hdr.tsn,
            data=rsp_hdr.serialize() + rsp.serialize(),
        )

    # --- our cluster: device-protocol messages in chunks ------------------------------------------------

    def _on_rebadge_cluster(self, packet: t.ZigbeePacket) -> None:
        chunk = self._request_chunk_of(packet)
        if chunk is None or self.network is None:
            return
        try:
            done = self._reassembler.feed(chunk.encode(), self.network.now())
        except zc.ChunkError as exc:
            log.info("zigbee node %s: bad request chunk: %s", self.sn, exc)
            return
        if chunk.count > 1 and chunk.index == 0 and self.faults.applies(chunk.msg, LinkFault.LEAVE_MID_TRANSFER):
            self.network.leave(self)
            return
        if done is not None:
            msg, request = done
            serve = self._serve(msg, request, multi=chunk.count > 1)
            self.network.spawn(serve, f"zigbee-node-{self.sn}-msg-{msg}")

    async def _serve(self, msg: int, request: bytes, *, multi: bool) -> None:
        answer = await self.firmware.handle(request)
        if self.network is None:
            return
        if multi and self.faults.applies(msg, LinkFault.LEAVE_AFTER_APPLY):
            self.network.leave(self)
            return
        if answer is None:
            log.info("zigbee node %s: stays silent to message %d", self.sn, msg)
            return
        for raw in zc.split(answer, msg, self.chunk_bytes):
            if not self.joined:
                return
            tsn = self.next_tsn()
            hdr = answer_header(tsn, zc.ANSWER_CHUNK_COMMAND, general=False, manufacturer=zc.MANUFACTURER_CODE)
            data = hdr.serialize() + t.LVBytes(raw).serialize()
            await self.network.uplink(self, self._packet(zigpy.profiles.zha.PROFILE_ID, zc.CLUSTER_ID, 1, tsn, data))

    def device_announce(self) -> t.ZigbeePacket:
        """The ZDO Device_annce broadcast a node sends when it has joined (or rejoined)."""
        tsn = self.next_tsn()
        capability = t.uint8_t(int(self.node_descriptor().mac_capability_flags))
        data = t.uint8_t(tsn).serialize() + self.nwk.serialize() + self.ieee.serialize() + capability.serialize()
        packet = self._packet(0, zdo_t.ZDOCmd.Device_annce, 0, tsn, data)
        broadcast = t.BroadcastAddress.RX_ON_WHEN_IDLE
        return packet.replace(dst=t.AddrModeAddress(addr_mode=t.AddrMode.Broadcast, address=broadcast))

    # --- sending ------------------------------------------------------------------------------------------

    def _packet(self, profile: int, cluster: int, endpoint: int, tsn: int, data: bytes) -> t.ZigbeePacket:
        return t.ZigbeePacket(
            src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=self.nwk),
            src_ep=t.uint8_t(endpoint),
            dst=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(0x0000)),
            dst_ep=t.uint8_t(endpoint),
            tsn=t.uint8_t(tsn),
            profile_id=t.uint16_t(profile),
            cluster_id=t.uint16_t(cluster),
            data=t.SerializableBytes(data),
            lqi=t.uint8_t(255),
            rssi=t.int8s(-40),
        )

    def _send(self, *, profile: int, cluster: int, endpoint: int, tsn: int, data: bytes) -> None:
        """Answer a request: the answer, with the request's TSN, goes up in a task of the network's."""
        if self.network is None:
            return
        packet = self._packet(profile, cluster, endpoint, tsn, data)
        self.network.spawn(self.network.uplink(self, packet), f"zigbee-node-{self.sn}-answer")
