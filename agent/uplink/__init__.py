"""The agent's MQTT uplink: records out, acks and scan commands in, status/events/progress/health for dashboards."""

from __future__ import annotations

from agent.uplink.core import Uplink, UplinkTiming
from agent.uplink.records import RecordJournal

__all__ = ["RecordJournal", "Uplink", "UplinkTiming"]
