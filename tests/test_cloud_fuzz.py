"""schemathesis against the published OpenAPI: generated requests, valid and not, never get a server error."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from cloud_bridge.platform import Platform
from cloud_bridge.service import ServeConfig, serve
from rebadge.broker import free_port

MAX_EXAMPLES = 12  # per operation: a bounded run, seconds not minutes
START_TIMEOUT_S = 10.0


class ServerThread:
    """`serve` (API only) on its own event loop in a thread, as the real process runs it."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="cloud-api", daemon=True)

    async def _main(self) -> None:
        platform = await Platform.open(self.data_dir)
        try:
            self.api_key = await platform.bootstrap_admin() or ""
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            await serve(platform, ServeConfig(port=self.port, mqtt_host=None), self._stop)
        finally:
            await platform.close()

    def __enter__(self) -> ServerThread:
        self._thread.start()
        with httpx.Client(base_url=self.url, timeout=0.5) as client:
            for _ in range(int(START_TIMEOUT_S / 0.05)):
                try:
                    client.get("/v1/health")
                except httpx.TransportError:
                    threading.Event().wait(0.05)
                else:
                    return self
        raise AssertionError("the API did not start")

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=START_TIMEOUT_S)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with ServerThread(tmp_path_factory.mktemp("fuzz") / "cloud") as s:
        yield s


def _check_operation(operation: Any, api_key: str) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: Any) -> None:
        case.call_and_validate(headers={"X-API-Key": api_key}, checks=[not_a_server_error])

    run()


def test_no_server_error(server: ServerThread) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    results: list[Any] = list(schema.get_all_operations())  # Ok(operation) or Err(reason the schema is invalid)
    operations = [result.ok() for result in results]
    assert len(operations) >= 20
    for operation in operations:
        _check_operation(operation, server.api_key)
