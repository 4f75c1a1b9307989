"""The platform's Prometheus endpoint, `GET /metrics` (mounted when prometheus-client is installed: the
`metrics` extra).

What it shows is platform-wide and label-free of tenants: records stored by kind, anomalies by kind, active
leases, gateways, record batches the in-process worker ingested by outcome, and HTTP requests by method, route
template and status. No label ever carries an organisation,
certificate, gateway or SN, and request paths are counted by their route template (`/v1/leases/{lease_id}`), never
the path itself. Even so, totals across every organisation are business data of them all, so the endpoint needs the
API key of platform staff (admin or auditor), sent as `X-API-Key` or `Authorization: Bearer` (Prometheus's
`authorization` scrape setting); any other account gets 403, no key 401.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Header, Request, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud_bridge.accounts import Actor
from cloud_bridge.api.deps import PlatformDep, api_key_header
from cloud_bridge.errors import PermissionDeniedError
from cloud_bridge.store.schema import anomalies, gateways, leases, records

BEARER = "bearer "
# A request no route matched is counted under this, not its path (which anyone can make up).
UNMATCHED = "unmatched"


class PlatformMetrics:
    """The platform's metrics in a registry of their own; store figures are read at each scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "rebadge_platform_http_requests", "HTTP requests by method, route template and status.",
            ["method", "route", "status"], registry=self.registry,
        )  # fmt: skip
        self.seconds = Counter(
            "rebadge_platform_http_request_seconds", "Time spent answering HTTP requests, by route template.",
            ["route"], registry=self.registry,
        )  # fmt: skip
        self.records = Gauge(
            "rebadge_platform_records_stored", "Verified journal records ingested, by kind.", ["kind"],
            registry=self.registry,
        )  # fmt: skip
        self.anomalies = Gauge(
            "rebadge_platform_anomalies", "Anomalies recorded, by kind.", ["kind"], registry=self.registry
        )
        self.leases = Gauge("rebadge_platform_leases_active", "Leases active now.", registry=self.registry)
        self.gateways = Gauge("rebadge_platform_gateways", "Gateways registered.", registry=self.registry)


class IngestCollector(Collector):
    """The batches the worker running in this process ingested, by outcome (none without a worker here)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        worker = getattr(self.app.state, "ingest", None)
        for outcome, n in sorted(dict(getattr(worker, "batches", {})).items()):
            family.add_metric([outcome], n)
        return [family]

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily(
            "rebadge_platform_ingest_batches", "Record batches this process's worker ingested, by outcome.",
            labels=["outcome"],
        )  # fmt: skip


class RequestCounter:
    """ASGI middleware: counts each HTTP request once it is answered."""

    def __init__(self, app: ASGIApp, metrics: PlatformMetrics, templates: Mapping[object, str]) -> None:
        self.app = app
        self.metrics = metrics
        self.templates = templates  # endpoint -> the full path template of its route

    def _template(self, scope: Scope) -> str:
        """The route template the request matched; a request no route matched is not named by its path."""
        endpoint = scope.get("endpoint")
        if endpoint in self.templates:
            return self.templates[endpoint]
        return str(getattr(scope.get("route"), "path", UNMATCHED)) if endpoint is not None else UNMATCHED

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.monotonic()

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = self._template(scope)
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.seconds.labels(route).inc(time.monotonic() - started)


async def staff(
    platform: PlatformDep,
    api_key: Annotated[str | None, Depends(api_key_header)],
    authorization: Annotated[str | None, Header()] = None,
) -> Actor:
    """The platform staff account behind the request (an API key in X-API-Key or as a bearer token)."""
    if api_key is None and authorization is not None and authorization.lower().startswith(BEARER):
        api_key = authorization[len(BEARER) :].strip()
    actor = await platform.authenticate(api_key)
    if not actor.platform_staff:
        raise PermissionDeniedError(
            f"role {actor.role.value} may not read /metrics: it shows totals of every organisation; "
            "it needs an admin or auditor key"
        )
    return actor


def metrics_router(metrics: PlatformMetrics) -> APIRouter:
    """`GET /metrics` for `metrics`."""
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def read_metrics(request: Request, _actor: Annotated[Actor, Depends(staff)]) -> Response:
        platform = request.app.state.platform
        async with platform.engine.connect() as conn:
            by_kind = (await conn.execute(select(records.c.kind, func.count()).group_by(records.c.kind))).all()
            odd = (await conn.execute(select(anomalies.c.kind, func.count()).group_by(anomalies.c.kind))).all()
            active = (await conn.execute(select(func.count()).where(leases.c.state == "active"))).scalar_one()
            registered = (await conn.execute(select(func.count()).select_from(gateways))).scalar_one()
        # Set together after every read, so a scrape never shows half of one reading and half of another.
        metrics.records.clear()
        for kind, n in by_kind:
            metrics.records.labels(kind).set(n)
        metrics.anomalies.clear()
        for kind, n in odd:
            metrics.anomalies.labels(kind).set(n)
        metrics.leases.set(active)
        metrics.gateways.set(registered)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router


def install_metrics(app: FastAPI, prefix: str, routers: Sequence[APIRouter]) -> PlatformMetrics:
    """Count the app's requests (`routers` are included under `prefix`) and serve them, with the store's figures,
    at /metrics."""
    metrics = PlatformMetrics()
    metrics.registry.register(IngestCollector(app))
    templates: dict[object, str] = {
        r.endpoint: prefix + r.path for router in routers for r in router.routes if isinstance(r, APIRoute)
    }
    app.add_middleware(RequestCounter, metrics=metrics, templates=templates)
    app.include_router(metrics_router(metrics))
    return metrics
