"""Requests to the platform (`req/{op}`) and their answers (`res/{op}`): one future per request id.

A request is a COSE_Sign1 token signed by the gateway key, naming the gateway, with a fresh nonce and the
gateway's time (`signed_request`); the platform refuses a replayed or unsigned one. An answer is matched by the
`id` in its payload, or, when the platform could not read that far (it answers with an empty id), by the MQTT 5
correlation data it echoes. Answers that do not parse, or that match no pending request, are logged and dropped:
a stale or forged answer must never reach a caller that did not ask.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from agent.errors import UplinkError
from agent.uplink.records import shown
from wire import topics
from wire.errors import WireError
from wire.key_rotation import KeyIntroduction
from wire.keys import SigningKey
from wire.lease_request import (
    LEASE_OP,
    RELEASE_OP,
    RENEW_OP,
    ROTATE_OP,
    LeaseAnswer,
    LeaseRequest,
    Release,
    ReleaseAnswer,
    RenewAnswer,
    RenewRequest,
    SignedRequest,
    lease_answer_from_cbor,
    new_nonce,
    release_answer_from_cbor,
    renew_answer_from_cbor,
)
from wire.tokens import sign

log = logging.getLogger(__name__)

Answer = LeaseAnswer | ReleaseAnswer | RenewAnswer
# The operations a gateway asks the platform for, each with the strict decoder of its answer.
ANSWER_DECODERS: dict[str, Callable[[bytes], Answer]] = {
    LEASE_OP: lease_answer_from_cbor,
    RELEASE_OP: release_answer_from_cbor,
    RENEW_OP: renew_answer_from_cbor,
    ROTATE_OP: renew_answer_from_cbor,  # a key introduction is answered with the new key's certificate
}


R = TypeVar("R", bound=SignedRequest)
R_co = TypeVar("R_co", bound=SignedRequest, covariant=True)
# The operation each kind of request goes out on.
OPS: dict[type[SignedRequest], str] = {
    LeaseRequest: LEASE_OP, Release: RELEASE_OP, RenewRequest: RENEW_OP, KeyIntroduction: ROTATE_OP,
}  # fmt: skip


@dataclass(frozen=True)
class Signed(Generic[R_co]):
    """A request and its token (what is published), signed by the gateway key."""

    request: R_co
    token: bytes

    @property
    def op(self) -> str:
        """The operation it goes out on (`req/{op}`)."""
        return OPS[type(self.request)]


def signed_request(
    cls: type[R], key: SigningKey, *, gw: str, clock: Callable[[], float] = time.time, **fields: Any
) -> Signed[R]:
    """A fresh request of `cls` from gateway `gw`, signed by `key`: an unguessable id, a fresh nonce, its time."""
    op = OPS[cls]
    request = cls(id=f"{op}-{secrets.token_hex(8)}", gw=gw, nonce=new_nonce(), at=int(clock()), **fields)
    return Signed(request, sign(request, key))


class PendingRequests:
    """The requests of one gateway that wait for an answer, keyed by (operation, request id)."""

    def __init__(self, gw: str) -> None:
        self._ops_by_topic = {topics.response(gw, op): op for op in ANSWER_DECODERS}
        self._pending: dict[tuple[str, str], asyncio.Future[Answer]] = {}
        self.ignored = 0  # answers dropped (unreadable or unasked-for), for tests and health

    @property
    def response_topics(self) -> list[str]:
        """The topics answers arrive on (subscribed at every connect)."""
        return list(self._ops_by_topic)

    def op_of(self, topic: str) -> str | None:
        """The operation whose answers arrive on `topic`, if any."""
        return self._ops_by_topic.get(topic)

    def open(self, op: str, request_id: str) -> asyncio.Future[Answer]:
        """A future for the answer to request `request_id`; a second open with the same id is an error."""
        if op not in ANSWER_DECODERS:
            raise UplinkError(f"operation {op!r} is not one the platform answers; use one of {sorted(ANSWER_DECODERS)}")
        if (op, request_id) in self._pending:
            raise UplinkError(f"a {op} request with id {request_id!r} is waiting already; use a fresh id")
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending[(op, request_id)] = future
        return future

    def close(self, op: str, request_id: str) -> None:
        """Forget a request (answered, timed out or cancelled)."""
        future = self._pending.pop((op, request_id), None)
        if future is not None and not future.done():
            future.cancel()

    def on_answer(self, op: str, payload: bytes, correlation: bytes | None) -> bool:
        """Hand an answer to the request it names; False (and a log line) when it does not parse or match."""
        try:
            answer = ANSWER_DECODERS[op](payload)
        except WireError as exc:
            self.ignored += 1
            log.warning("uplink: ignoring a %s answer that does not parse (%s): %s", op, exc, shown(payload))
            return False
        request_id = answer.id or _text(correlation)
        future = self._pending.get((op, request_id)) if request_id else None
        if future is None or future.done():
            self.ignored += 1
            log.warning(
                "uplink: ignoring a %s answer (%s) for request id %r, which no pending request has",
                op, answer.code, request_id,
            )  # fmt: skip
            return False
        future.set_result(answer)
        return True


def _text(correlation: bytes | None) -> str:
    if not correlation:
        return ""
    try:
        return correlation.decode()
    except UnicodeDecodeError:
        return ""
