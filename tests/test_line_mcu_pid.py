"""General firmware keeps the PID in the product's MCU, and the goods' data follows that PID: the line refuses a
unit whose MCU carries another PID than the certificate's, naming both, and spends nothing on it."""

from __future__ import annotations

from pathlib import Path

from rebadge.broker import PrivateBroker
from simulator.goods import UnitSpec
from tests.e2e_support import NEW_PID, ORIGINAL_PID, running_line
from wire.device import Firmware
from wire.topics import Result

OTHER_PID = "other123"  # another product's PID, burned into the MCU file


async def test_a_unit_whose_mcu_carries_another_pid_is_refused_naming_both(
    tmp_path: Path, broker: PrivateBroker
) -> None:
    wrong = UnitSpec(sn="MCU-OTHER-01", pid=OTHER_PID, firmware=Firmware.GENERAL)
    right = UnitSpec(sn="MCU-RIGHT-01", pid=ORIGINAL_PID, firmware=Firmware.GENERAL)
    async with running_line(tmp_path, broker, [wrong, right], quota=2) as line:
        cert_no = line.cloud.cert.cert_no
        before = await line.agent.counts(cert_no)
        refused = await line.agent.scan(wrong.sn)
        assert (refused.result, refused.reason) == (Result.REFUSED, "wrong_pid")
        assert refused.message == (
            f"{wrong.sn}: its MCU reports PID {OTHER_PID}, but certificate {cert_no} rebadges {ORIGINAL_PID} to "
            f"{NEW_PID}; the goods' data follows the PID the MCU carries, so burn the MCU file of {ORIGINAL_PID} "
            f"first (or use a certificate from {OTHER_PID})"
        )
        mcu = line.goods.mcus[wrong.sn]
        assert (mcu.pid, mcu.set_requests) == (OTHER_PID, [])  # never asked to take the new PID
        after = await line.agent.counts(cert_no)
        assert (after.confirmed, after.in_doubt, after.remaining) == (0, 0, before.remaining)
        assert await line.agent.head() == 0  # nothing journalled: no slot reserved

        confirmed = await line.agent.scan(right.sn)
        assert (confirmed.result, confirmed.slot) == (Result.CONFIRMED, 0)
        assert line.goods.mcus[right.sn].pid == NEW_PID  # the MCU carries the certificate's new PID
