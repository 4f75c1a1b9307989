"""One MQTT connection life cycle for the agent and the platform: a state with one setter, a reconnect policy
whose backoff resets after a healthy session, and a runner that drives aiomqtt through its public `async with`."""

from __future__ import annotations

from mqtt_link.policy import ReconnectPolicy
from mqtt_link.runner import SessionRunner
from mqtt_link.state import ConnectionState, LinkState

__all__ = ["ConnectionState", "LinkState", "ReconnectPolicy", "SessionRunner"]
