"""The agent's Prometheus endpoint scraped over HTTP while the real agent scans simulated goods (uplink down)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.service import AgentService
from rebadge.broker import free_port
from simulator.firmware import Fault
from tests.e2e_support import WAIT_S, Gateway, running, running_goods, units
from tests.line_support import leased_gateway
from tests.uplink_support import eventually
from wire.topics import Result

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(port: int) -> Samples:
    """Every sample of /metrics, keyed by name and sorted labels."""
    async with httpx.AsyncClient(timeout=WAIT_S) as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


@asynccontextmanager
async def running_service(gateway: Gateway) -> AsyncIterator[AgentService]:
    service = AgentService(gateway.config)
    async with running(service.run(), "metrics:agent"):
        async with asyncio.timeout(WAIT_S):
            await service.ready.wait()
        yield service


async def test_metrics_count_scans_slots_unsent_records_and_the_uplink(tmp_path: Path) -> None:
    gateway, issuer = await leased_gateway(tmp_path, slots=5)
    port = free_port()
    gateway.settings["metrics"] = {"port": port}
    ok, busy = units(1, "METOK")[0], units(1, "METBUSY", fault=Fault.REFUSE)[0]
    async with running_goods(issuer, [ok, busy], gateway.discovery_port), running_service(gateway) as service:
        assert service.journal is not None
        (cert_no,) = await service.journal.cert_nos()
        assert service.metrics is not None
        async with asyncio.timeout(WAIT_S):
            await service.metrics.listening.wait()
        before = await scrape(port)
        assert before[("rebadge_agent_scans_total", (("result", "confirmed"),))] == 0
        assert before[("rebadge_agent_slots_left", (("cert_no", cert_no),))] == 5
        ((info, value),) = [(dict(labels), v) for (name, labels), v in before.items() if name == "rebadge_agent_info"]
        assert (info["gw"], info["name"], value) == (gateway.gw, "e2e-line", 1)
        assert (await service.scan(ok.sn)).result is Result.CONFIRMED
        assert (await service.scan(busy.sn)).result is Result.REFUSED
        head, _ = await service.journal.head()

        async def settled() -> Samples:
            for _ in range(50):
                now = await scrape(port)
                if now[("rebadge_agent_journal_unsent_records", ())] == head:
                    return now
                await asyncio.sleep(0.1)
            raise AssertionError(f"unsent records never reached {head}")

        after = await settled()
    assert after[("rebadge_agent_scans_total", (("result", "confirmed"),))] == 1
    assert after[("rebadge_agent_scans_total", (("result", "refused"),))] == 1
    assert after[("rebadge_agent_scans_total", (("result", "in_doubt"),))] == 0
    assert after[("rebadge_agent_slots_left", (("cert_no", cert_no),))] == 4  # the refusal's slot came back
    assert after[("rebadge_agent_in_doubt", ())] == 0
    assert head > 0  # nothing acked: no broker
    assert after[("rebadge_agent_uplink_state", (("state", "connected"),))] == 0
    assert sum(v for (name, _), v in after.items() if name == "rebadge_agent_uplink_state") == 1


async def test_metrics_are_off_by_default_and_a_taken_port_never_stops_the_agent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gateway, _ = await leased_gateway(tmp_path, slots=2)
    async with running_service(gateway) as service:
        assert service.metrics is None
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        gateway.settings["metrics"] = {"port": port}
        with caplog.at_level(logging.ERROR, logger="agent.metrics"):
            async with running_service(gateway) as service:
                await eventually(lambda: any("metrics.port" in r.getMessage() for r in caplog.records))
                assert service.ready.is_set()
                assert service.journal is not None
                await service.journal.head()  # still serving
    (said,) = [r.getMessage() for r in caplog.records if "metrics.port" in r.getMessage()]
    assert f"127.0.0.1:{port}" in said
    assert "runs on without metrics" in said
