"""Run MQTT sessions one after another until cancelled: connect with aiomqtt's `async with`, greet (subscribe),
serve, and after a loss wait as the reconnect policy says."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aiomqtt

from mqtt_link.policy import ReconnectPolicy
from mqtt_link.state import ConnectionState, LinkState

NewClient = Callable[[], Awaitable[aiomqtt.Client]]
Step = Callable[[aiomqtt.Client], Awaitable[None]]
RetryAtOnce = Callable[[BaseException], bool]

# What ends one session (the link is lost or refused) but not the runner.
SESSION_LOST: tuple[type[Exception], ...] = (aiomqtt.MqttError, TimeoutError)


class SessionEndedError(aiomqtt.MqttError):
    """A session's serve step returned although the connection was still up."""


def _stop_if_cancelled(exc: BaseException) -> None:
    # Python 3.11's asyncio.wait_for (inside aiomqtt) can swallow a cancellation that races a reply, and aiomqtt's
    # __aexit__ can turn one into an MqttError: a pending cancel must still stop the runner.
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc


def reasons(exc: BaseException) -> str:
    """The leaf errors of `exc` (an exception group or not), for one log line."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(reasons(e) for e in exc.exceptions)
    return str(exc) or type(exc).__name__


class SessionRunner:
    """One MQTT link: `run()` connects, greets, serves and reconnects by `policy` until cancelled.

    `new_client` builds a fresh client for each attempt; `greet` (subscriptions, a first publish) runs within
    `connect_timeout_s` of the connect; the link is CONNECTED while `serve` runs. `lost` adds exception types that
    end a session as a lost connection does; `retry_at_once` may ask for a new attempt without waiting (a broker
    that refused the protocol version). `hint` (the settings that name the broker, and what to do) follows the
    first warning of each cause; the same cause again is logged at debug, so an outage is one line, not one a retry.
    """

    def __init__(
        self, name: str, *, new_client: NewClient, greet: Step, serve: Step, policy: ReconnectPolicy,
        connect_timeout_s: float, where: str, logger: logging.Logger, lost: tuple[type[Exception], ...] = (),
        retry_at_once: RetryAtOnce | None = None, hint: str = "",
    ) -> None:  # fmt: skip
        self.name = name
        self.link = LinkState(name)
        self.policy = policy
        self.where = where
        self.connections = 0
        self._new_client = new_client
        self._greet = greet
        self._serve = serve
        self._connect_timeout_s = connect_timeout_s
        self._log = logger
        self._lost = SESSION_LOST + lost
        self._retry_at_once = retry_at_once or (lambda _exc: False)
        self._hint = hint

    @property
    def state(self) -> ConnectionState:
        """The link's state now."""
        return self.link.state

    async def run(self) -> None:
        """Connect, serve and reconnect until cancelled."""
        said = ""  # the cause last warned about; a session that came up clears it
        try:
            while True:
                self.link.set(ConnectionState.CONNECTING)
                connections = self.connections
                reason = await self._attempt()
                if self._retry_at_once(reason):
                    continue
                self.link.set(ConnectionState.BACKING_OFF)
                delay = self.policy.next_delay()
                cause = reasons(reason)
                said = "" if self.connections > connections else said
                if cause == said:
                    self._log.debug("%s: %s: %s again; reconnecting in %.2f s", self.name, self.where, cause, delay)
                else:
                    hint = f" ({self._hint})" if self._hint else ""
                    self._log.warning("%s: %s: %s%s; reconnecting in %.2f s", self.name, self.where, cause, hint, delay)
                said = cause
                await asyncio.sleep(delay)
        finally:
            self.link.set(ConnectionState.CLOSED)

    async def _attempt(self) -> BaseException:
        # Each session runs in a task of its own: on Python 3.11 a TaskGroup whose child fails while the parent
        # waits in __aexit__ never uncancel()s the parent, so a long-lived task would look "cancelling" for good
        # after its first lost connection. Cancelling run() cancels the session and waits for its close.
        session = asyncio.create_task(self._session(), name=f"{self.name}: session")
        try:
            await session
        except self._lost as exc:
            _stop_if_cancelled(exc)
            return exc
        except BaseExceptionGroup as group:
            lost, other = group.split(self._lost)
            if other is not None or lost is None:
                raise
            _stop_if_cancelled(group)
            return lost
        return SessionEndedError("the session ended")

    async def _session(self) -> None:
        client = await self._new_client()
        async with asyncio.timeout(self._connect_timeout_s) as deadline, client:
            await self._greet(client)
            deadline.reschedule(None)
            self.connections += 1
            self.policy.connected()
            self.link.set(ConnectionState.CONNECTED)
            self._log.info("%s: connected to %s", self.name, self.where)
            try:
                await self._serve(client)
            finally:
                # Leave CONNECTED before the (bounded) disconnect, so nobody publishes on a closing client.
                if self.link.state is ConnectionState.CONNECTED:
                    self.link.set(ConnectionState.BACKING_OFF)
