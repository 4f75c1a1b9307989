"""Our manufacturer-specific cluster as zigpy sees it: request chunks go to the device, answer chunks come back.

Importing this module registers the cluster with zigpy, so a device whose simple descriptor lists
CLUSTER_ID gets this class (and its commands parse) during the interview or when loaded from the database.
"""

from __future__ import annotations

from typing import Any, Final

import zigpy.types as t
from zigpy.zcl import Cluster, foundation
from zigpy.zcl.foundation import BaseCommandDefs, ZCLCommandDef

from wire import zigbee_chunks as zc


class RequestChunk(foundation.CommandSchema):
    """Server command payload: one chunk of a request."""

    chunk: t.LVBytes


class AnswerChunk(foundation.CommandSchema):
    """Client command payload: one chunk of an answer."""

    chunk: t.LVBytes


class RebadgeCluster(Cluster):
    """Device-protocol messages (wire.device) in chunks (wire.zigbee_chunks)."""

    cluster_id = t.uint16_t(zc.CLUSTER_ID)
    ep_attribute = "rebadge"
    manufacturer_id_override = t.uint16_t(zc.MANUFACTURER_CODE)

    class ServerCommandDefs(BaseCommandDefs):
        request_chunk: Final = ZCLCommandDef(
            id=t.uint8_t(zc.REQUEST_CHUNK_COMMAND),
            schema=RequestChunk,
            manufacturer_code=t.uint16_t(zc.MANUFACTURER_CODE),
        )

    class ClientCommandDefs(BaseCommandDefs):
        answer_chunk: Final = ZCLCommandDef(
            id=t.uint8_t(zc.ANSWER_CHUNK_COMMAND),
            schema=AnswerChunk,
            manufacturer_code=t.uint16_t(zc.MANUFACTURER_CODE),
        )

    def handle_cluster_request(self, hdr: foundation.ZCLHeader, args: Any, **kwargs: Any) -> None:
        """Answer chunks go to listeners (`cluster_command`); a chunk never asks for a Default Response."""

    async def send_chunk(self, chunk: bytes, *, retries: int) -> None:
        """Send one request chunk; returns when its APS ACK is in, DeliveryError when none comes."""
        await self.command(
            zc.REQUEST_CHUNK_COMMAND,
            chunk=t.LVBytes(chunk),
            expect_reply=False,
            disable_default_response=True,
            retries=retries,
        )


def answer_chunk_of(command_id: int, args: Any) -> bytes | None:
    """The chunk bytes of a received `answer_chunk` command, or None for any other command."""
    if command_id != zc.ANSWER_CHUNK_COMMAND:
        return None
    chunk = getattr(args, "chunk", None)
    return bytes(chunk) if isinstance(chunk, bytes) else None
