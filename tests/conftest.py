"""Shared fixtures: a private mosquitto per test, and a guard against tasks left running."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from rebadge.broker import PrivateBroker, free_port

TASK_GRACE_ROUNDS = 20

# No per-example deadline: on a loaded 2-core machine a garbage collection can pass 200 ms, and a property that
# failed only on time would be a flaky failure, not a finding. Properties with their own profile keep it.
settings.register_profile("rebadge", deadline=None)
settings.load_profile("rebadge")

Broker = PrivateBroker
__all__ = ["Broker", "free_port"]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    """A running private mosquitto on a free port; `broker.stop()` / `broker.start()` restart it on that port."""
    b = PrivateBroker(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


@pytest.fixture(autouse=True)
async def _no_lingering_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running after it ends."""
    yield
    current = asyncio.current_task()
    left: list[asyncio.Task[object]] = []
    for _ in range(TASK_GRACE_ROUNDS):
        left = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        if not left:
            return
        await asyncio.sleep(0.01)
    names = ", ".join(sorted(t.get_name() + ":" + repr(t.get_coro()) for t in left))
    pytest.fail(f"test left {len(left)} task(s) running: {names}")
