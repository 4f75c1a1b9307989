"""Times as people read them: the one format every command prints a time in."""

from __future__ import annotations

import datetime


def utc_iso(at: float) -> str:
    """A Unix time as ISO 8601 in UTC to the second, e.g. `2026-12-02T07:19:32Z`."""
    return datetime.datetime.fromtimestamp(at, datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
