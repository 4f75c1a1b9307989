"""The connection state of one MQTT link: an enum, and one setter that logs each transition and tells listeners."""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

Listener = Callable[["ConnectionState", "ConnectionState"], None]


class ConnectionState(enum.Enum):
    """Where a link is in its life cycle."""

    INITIALIZED = "initialized"  # built, never started
    CONNECTING = "connecting"  # TCP, TLS, CONNACK and the session's subscriptions
    CONNECTED = "connected"  # subscribed and serving
    BACKING_OFF = "backing_off"  # the last attempt or session ended; waiting before the next
    CLOSED = "closed"  # stopped for good


class LinkState:
    """The state of one link; only `set()` changes it, so every transition is logged and announced."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._state = ConnectionState.INITIALIZED
        self._listeners: list[Listener] = []

    @property
    def state(self) -> ConnectionState:
        """The state now."""
        return self._state

    @property
    def is_connected(self) -> bool:
        """Whether the link is subscribed and serving."""
        return self._state is ConnectionState.CONNECTED

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(old, new)` on every transition; returns a function that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def set(self, new: ConnectionState) -> None:
        """Move to `new` (nothing happens when already there)."""
        old = self._state
        if new is old:
            return
        if old is ConnectionState.CLOSED:
            raise RuntimeError(f"{self.name}: the link is closed; it cannot become {new.value}")
        self._state = new
        log.debug("%s: %s -> %s", self.name, old.value, new.value)
        for listener in list(self._listeners):
            listener(old, new)
