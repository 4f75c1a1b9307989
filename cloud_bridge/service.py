"""`rebadge cloud serve`: the HTTP API and the MQTT worker in one process, on one platform; clean stop on signals."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import ssl
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass

import uvicorn

from cloud_bridge.api.app import create_app
from cloud_bridge.errors import ConfigError
from cloud_bridge.platform import Platform
from cloud_bridge.scan_relay import ScanRelay
from cloud_bridge.worker import IngestWorker

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass(frozen=True)
class ServeConfig:
    """Where to listen for HTTP and which broker to ingest from (mqtt_host None: no worker in this process)."""

    host: str = "127.0.0.1"
    port: int = 8080
    mqtt_host: str | None = "127.0.0.1"
    mqtt_port: int = 1883
    shared_group: str | None = None
    mqtt_tls: ssl.SSLContext | None = None  # the platform's service identity; None: plaintext (the loopback demo)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: it would re-raise SIGTERM and kill us before we close the store."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.contextmanager
def signal_event() -> Iterator[asyncio.Event]:
    """An event set by SIGINT or SIGTERM while the block runs."""
    loop = asyncio.get_running_loop()
    event = asyncio.Event()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, event.set)
    try:
        yield event
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


async def until_signalled(work: Awaitable[None]) -> None:
    """Run `work` until it ends, or until SIGINT/SIGTERM cancels it."""
    with signal_event() as stop:
        task = asyncio.ensure_future(work)
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        log.info("stopped")


def listen(host: str, port: int) -> socket.socket:
    """The API's listening socket, or a ConfigError naming --host/--port and what to do (before anything starts)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=2048)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: not an address or a known name ({exc.strerror}); correct --host") from exc
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"--port {port}: {host}:{port} is in use by another program ('ss -ltnp sport = :{port}' shows which); "
                "stop it (is another 'rebadge cloud serve' running?), or choose another --port"
            ) from exc
        if exc.errno == errno.EACCES:
            raise ConfigError(
                f"--port {port}: this user may not listen on ports below 1024; choose --port 1024 or above "
                "(put a reverse proxy in front), or run as the platform's service"
            ) from exc
        raise ConfigError(
            f"--host {host} --port {port}: cannot listen there ({os.strerror(exc.errno or 0)}); "
            "use an address of this machine"
        ) from exc


async def serve(
    platform: Platform, config: ServeConfig, stop: asyncio.Event, *, sock: socket.socket | None = None
) -> None:
    """Serve the API (and run the worker) until `stop` is set; the server shuts down gracefully first.

    `sock` is the socket `listen()` opened (made here when None).
    """
    sock = sock or listen(config.host, config.port)
    worker = None
    if config.mqtt_host is not None:
        worker = IngestWorker(
            platform, host=config.mqtt_host, port=config.mqtt_port, shared_group=config.shared_group,
            tls_context=config.mqtt_tls,
        )  # fmt: skip
    relay = None
    if config.mqtt_host is not None:  # the console's scans go out on the worker's broker, as the same identity
        relay = ScanRelay(config.mqtt_host, config.mqtt_port, tls_context=config.mqtt_tls)
    app = create_app(platform, relay)
    app.state.ingest = worker  # /metrics reports its batches
    server = _Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="warning", lifespan="off"))

    async def stop_server() -> None:
        await stop.wait()
        server.should_exit = True

    async with asyncio.TaskGroup() as tasks:
        helpers = [tasks.create_task(stop_server(), name="cloud-serve-stop")]
        if worker is not None:
            helpers.append(tasks.create_task(worker.run(), name="cloud-worker"))
        if relay is not None:
            helpers.append(tasks.create_task(relay.run(), name="cloud-console-scans"))
        log.info("API on http://%s:%d (OpenAPI at /openapi.json, console at /console/)", config.host, config.port)
        await server.serve(sockets=[sock])
        for helper in helpers:
            helper.cancel()
