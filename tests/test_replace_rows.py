"""The Perform replacement page's result rows, rendered from the template the page polls."""

from __future__ import annotations

import pytest

from cloud_bridge.console.rendering import templates
from cloud_bridge.scan_relay import SentScan
from wire.topics import Result, ScanEvent


def _row(event: ScanEvent | None) -> str:
    sent = SentScan("r1", "0123456789abcdef", "SN-1", sent_at=1_800_000_000, sent_by="tom", event=event)
    return templates.env.get_template("replace_rows.html").render(results=[sent])


@pytest.mark.parametrize(("slot", "shown"), [(3, "(now PIDNEW, slot 3)"), (None, "(now PIDNEW)")])
def test_a_confirmed_row_names_the_new_pid_and_its_slot_only_when_one_was_spent(slot: int | None, shown: str) -> None:
    # A rescan of a unit already rebadged is confirmed without spending a slot: no "slot None" on the page.
    html = _row(ScanEvent(sn="SN-1", result=Result.CONFIRMED, new_pid="PIDNEW", slot=slot, message="rebadged"))
    assert shown in html
    assert "None" not in html


def test_a_row_still_waiting_says_so() -> None:
    assert "SENT, WAITING" in _row(None)
