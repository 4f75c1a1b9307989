"""Device-protocol messages to and from one Zigbee device, in chunks on our cluster.

A request goes out chunk by chunk, each acknowledged at the APS layer before the next; the answer comes back
as client commands that zigpy hands to `cluster_command`. Whether a failed request may have reached the
device (`sent`) follows from where it failed: a device can act only on a whole message, so a request is
"sent" once its last chunk has started on its way.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from dataclasses import dataclass
from typing import Any

import zigpy.exceptions

from agent.errors import DeviceTimeoutError, LinkLostError, ProtocolError, RadioError
from agent.radios.zigbee.cluster import RebadgeCluster, answer_chunk_of
from wire import zigbee_chunks as zc

log = logging.getLogger(__name__)

# zigpy's own default: two more tries, 0.1 s apart, before a chunk counts as not acknowledged.
CHUNK_SEND_RETRIES = 2


@dataclass
class _Progress:
    """Where one exchange stands."""

    waiter: asyncio.Future[bytes]
    sent: bool = False  # the last chunk has started on its way: the device may act on the request
    ack_lost: bool = False  # ... and its APS ACK never came
    left: str | None = None  # the device left during the exchange (why)


class _LinkGoneError(Exception):
    """The device left the network (internal: turned into LinkLostError with the right `sent`)."""


class DeviceChannel:
    """The chunked message pipe to one device (by IEEE address); survives zigpy re-creating the device."""

    def __init__(self, label: str, cluster: RebadgeCluster, *, chunk_bytes: int, frame_timeout_s: float) -> None:
        self.label = label
        self.chunk_bytes = chunk_bytes
        self.frame_timeout_s = frame_timeout_s
        self._cluster = cluster
        self._reassembler = zc.Reassembler(timeout_s=frame_timeout_s * 4)
        self._active: dict[int, _Progress] = {}
        # A random first number: a device still remembering our last session's numbers takes nothing for a repeat.
        first = random.randrange(256)
        self._msgs = itertools.cycle([*range(first, 256), *range(first)])
        self._gone: str | None = None
        cluster.add_listener(self)

    def rebind(self, cluster: RebadgeCluster) -> None:
        """Follow zigpy to a new cluster object (after a re-interview or a reload from the database)."""
        if cluster is self._cluster:
            return
        self._cluster.remove_listener(self)
        self._cluster = cluster
        cluster.add_listener(self)

    def close(self) -> None:
        """Stop listening to the device."""
        self._cluster.remove_listener(self)
        self.lost("the radio stopped")

    # --- zigpy callbacks (called on the event loop) -----------------------------------------------------

    def cluster_command(self, tsn: int, command_id: int, args: Any) -> None:
        """zigpy listener hook: one command received on our cluster."""
        raw = answer_chunk_of(command_id, args)
        if raw is None:
            return
        loop = asyncio.get_running_loop()
        try:
            done = self._reassembler.feed(raw, loop.time())
        except zc.ChunkError as exc:
            log.warning("zigbee device %s sent a bad answer chunk: %s", self.label, exc)
            self._fail_msg(raw, exc)
            return
        if done is None:
            return
        msg, message = done
        progress = self._active.get(msg)
        if progress is not None and not progress.waiter.done():
            progress.waiter.set_result(message)

    def _fail_msg(self, raw: bytes, exc: zc.ChunkError) -> None:
        progress = self._active.get(raw[0]) if raw else None
        if progress is not None and not progress.waiter.done():
            progress.waiter.set_exception(exc)

    def lost(self, reason: str) -> None:
        """The device left: every pending exchange ends with LinkLostError."""
        self._gone = reason
        for progress in self._active.values():
            progress.left = reason
            if not progress.waiter.done():
                progress.waiter.set_exception(_LinkGoneError(reason))

    def back(self) -> None:
        """The device is on the network again."""
        self._gone = None

    @property
    def gone(self) -> bool:
        """Whether the device has left and not come back."""
        return self._gone is not None

    # --- the exchange -----------------------------------------------------------------------------------

    async def exchange(self, request: bytes, timeout: float) -> bytes:
        """Send one request in chunks and return the reassembled answer, all within `timeout`."""
        msg = next(self._msgs)
        self._reassembler.forget(msg)
        chunks = zc.split(request, msg, self.chunk_bytes)
        progress = _Progress(asyncio.get_running_loop().create_future())
        self._active[msg] = progress
        try:
            async with asyncio.timeout(timeout):
                await self._send_chunks(chunks, msg, progress)
                return await self._await_answer(progress)
        except RadioError:
            raise
        except TimeoutError as exc:
            message = self._timeout_message(msg, len(chunks), progress, timeout)
            raise DeviceTimeoutError(message, sn=self.label, sent=progress.sent) from exc
        except _LinkGoneError as exc:
            raise LinkLostError(
                f"zigbee device {self.label} left the network: {exc}", sn=self.label, sent=True
            ) from exc
        except zc.ChunkError as exc:
            raise ProtocolError(
                f"zigbee device {self.label} sent a bad answer: {exc}", sn=self.label, sent=True
            ) from exc
        finally:
            del self._active[msg]
            if progress.waiter.done() and not progress.waiter.cancelled():
                progress.waiter.exception()  # retrieved: a late failure is no one's error
            progress.waiter.cancel()

    async def _send_chunks(self, chunks: list[bytes], msg: int, progress: _Progress) -> None:
        """Send every chunk, each acknowledged before the next; only the last one's ACK may go missing."""
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            # A device that left before the last chunk cannot hold the whole request, even if it is back.
            left = progress.left or self._gone
            if left is not None:
                raise LinkLostError(
                    f"zigbee device {self.label} left the network ({left}) before chunk {i + 1}/{len(chunks)}",
                    sn=self.label,
                    sent=False,
                )
            progress.sent = last
            try:
                async with asyncio.timeout(self.frame_timeout_s):
                    await self._cluster.send_chunk(chunk, retries=CHUNK_SEND_RETRIES)
            except (zigpy.exceptions.DeliveryError, TimeoutError) as exc:
                if not last:
                    raise self._chunk_error(i, len(chunks), exc, progress) from exc
                # The last chunk may have arrived with only its ACK lost: the device's answer decides.
                log.info("zigbee device %s: last chunk of message %d not acknowledged (%s)", self.label, msg, exc)
                progress.ack_lost = True

    def _chunk_error(
        self, index: int, count: int, exc: Exception, progress: _Progress
    ) -> DeviceTimeoutError | LinkLostError:
        where = f"chunk {index + 1}/{count}"
        left = progress.left or self._gone
        if left is not None:
            return LinkLostError(
                f"zigbee device {self.label} left the network ({left}) at {where}", sn=self.label, sent=False
            )
        return DeviceTimeoutError(
            f"zigbee device {self.label} did not acknowledge {where} of the request ({exc}); nothing was applied",
            sn=self.label,
            sent=False,
        )

    async def _await_answer(self, progress: _Progress) -> bytes:
        if not progress.ack_lost:
            return await progress.waiter
        async with asyncio.timeout(self.frame_timeout_s):
            return await progress.waiter

    def _timeout_message(self, msg: int, count: int, progress: _Progress, timeout: float) -> str:
        missing = self._reassembler.missing(msg)
        if missing is None:
            got = "no answer"
        else:
            got = f"an incomplete answer (chunks {', '.join(str(i + 1) for i in missing)} missing)"
        if progress.ack_lost:
            where = f"after the last of {count} request chunk(s) went unacknowledged"
        elif progress.sent:
            where = f"after sending all {count} request chunk(s)"
        else:
            where = f"while sending {count} request chunk(s)"
        return f"zigbee device {self.label}: {got} {where}, within {timeout:.1f}s"
