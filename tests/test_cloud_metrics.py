"""The platform's /metrics: staff only, platform-wide figures from the store, requests by route template, and
nothing that names another organisation's certificates, leases, gateways or the paths a client made up."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from paho.mqtt import publish
from prometheus_client.parser import text_string_to_metric_families

from cloud_bridge import anomalies
from cloud_bridge.anomalies import AnomalyKind
from cloud_bridge.platform import Platform
from rebadge.broker import PrivateBroker, free_port
from tests.test_cloud_api import World, fixture_world  # noqa: F401  (fixtures)
from tests.test_cloud_helpers import (  # noqa: F401  (fixtures)
    fixture_db_url,
    fixture_pg_database,
    fixture_pg_run,
    fixture_platform,
)
from tests.test_cloud_serve import KEY_LINE, START_TIMEOUT_S, _start, _stop, _wait_serving
from wire import topics

BATCHES = "rebadge_platform_ingest_batches_total"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def get_metrics(world: World, headers: dict[str, str]) -> httpx.Response:
    return await world.client.get("/metrics", headers=headers)


async def test_metrics_need_a_platform_staff_key(world: World) -> None:
    assert (await get_metrics(world, {})).status_code == 401
    assert (await get_metrics(world, {"Authorization": "Bearer rbk_not-a-key"})).status_code == 401
    for role in ("factory_admin", "technician", "customer", "buyer", "rival"):
        refused = await get_metrics(world, world.h(role))
        assert refused.status_code == 403, role
        assert "admin or auditor" in refused.json()["detail"]
        assert (await get_metrics(world, {"Authorization": f"Bearer {world.keys[role]}"})).status_code == 403
    assert (await get_metrics(world, world.h("admin"))).status_code == 200
    auditor = await get_metrics(world, {"Authorization": f"Bearer {world.keys['auditor']}"})  # Prometheus's way
    assert auditor.status_code == 200
    assert auditor.headers["content-type"].startswith("text/plain")
    assert "/metrics" not in (await world.client.get("/openapi.json")).text


async def test_metrics_count_the_store_and_requests_without_naming_any_tenant(world: World, platform: Platform) -> None:
    await platform.run(anomalies.store, AnomalyKind.UNKNOWN_GATEWAY, "a test anomaly", 1, gw="feedfacefeedface")
    await world.call("rival", "GET", f"/certificates/{world.cert_no}")
    made_up = "/v1/no-such-thing/SECRETPATH42"
    assert (await world.client.get(made_up)).status_code == 404
    text = (await get_metrics(world, world.h("admin"))).text
    got = samples(text)
    assert got[("rebadge_platform_leases_active", ())] == 1
    assert got[("rebadge_platform_anomalies", (("kind", "unknown_gateway"),))] == 1
    assert ("rebadge_platform_gateways", ()) in got
    routes = {dict(labels)["route"] for (name, labels) in got if name == "rebadge_platform_http_requests_total"}
    assert "/v1/certificates/{cert_no}" in routes
    assert "unmatched" in routes
    by_status = {
        (dict(labels)["route"], dict(labels)["status"]): v
        for (name, labels), v in got.items()
        if name == "rebadge_platform_http_requests_total"
    }
    assert by_status[("unmatched", "404")] >= 1
    for secret in (world.cert_no, world.lease_id, world.gateway.kid.hex(), "feedfacefeedface", "SECRETPATH42",
                   "rival", "brand"):  # fmt: skip
        assert secret not in text, secret


def test_the_real_serve_process_serves_metrics_to_its_admin(tmp_path: Path, broker: PrivateBroker) -> None:
    port = free_port()
    proc = _start(tmp_path / "cloud", port, broker)
    try:
        lines = _wait_serving(proc, port)
        assert any(line.startswith(KEY_LINE) for line in lines)
        key = (tmp_path / "cloud" / "admin-key").read_text().strip()
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/metrics").status_code == 401
        scraped = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {key}"})
        assert scraped.status_code == 200
        got = samples(scraped.text)
        health = {
            dict(labels)["status"]: v
            for (name, labels), v in got.items()
            if name == "rebadge_platform_http_requests_total" and dict(labels)["route"] == "/v1/health"
        }
        assert health["200"] >= 1  # the start-up probes
        assert got[("rebadge_platform_leases_active", ())] == 0
        # A batch that is no batch, from a gateway nobody knows: the in-process worker counts it, naming no gateway.
        stranger = "0badc0de0badc0de"
        deadline = time.monotonic() + START_TIMEOUT_S
        rejected = 0.0
        while not rejected and time.monotonic() < deadline:
            publish.single(topics.records(stranger), b"not cbor", qos=1, hostname=broker.host, port=broker.port)
            scraped = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {key}"})
            rejected = samples(scraped.text).get(
                ("rebadge_platform_ingest_batches_total", (("outcome", "rejected"),)), 0
            )
            time.sleep(0.1)
        assert rejected >= 1
        assert stranger not in scraped.text
    finally:
        assert _stop(proc) == 0
