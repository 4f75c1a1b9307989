"""The shared MQTT life cycle without a broker: the state's one setter and its listeners, the reconnect policy's
capped jittered backoff and its reset after a healthy session (on a fake clock, no sleeps)."""

from __future__ import annotations

import logging

import pytest

from mqtt_link import ConnectionState, LinkState, ReconnectPolicy


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_setter_logs_and_announces_each_transition_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mqtt_link")
    link = LinkState("uplink gw1")
    seen: list[tuple[ConnectionState, ConnectionState]] = []
    remove = link.add_listener(lambda old, new: seen.append((old, new)))
    assert link.state is ConnectionState.INITIALIZED
    link.set(ConnectionState.CONNECTING)
    link.set(ConnectionState.CONNECTING)  # no transition: nothing announced
    link.set(ConnectionState.CONNECTED)
    assert link.is_connected
    remove()
    link.set(ConnectionState.BACKING_OFF)
    assert seen == [
        (ConnectionState.INITIALIZED, ConnectionState.CONNECTING),
        (ConnectionState.CONNECTING, ConnectionState.CONNECTED),
    ]
    assert "uplink gw1: connected -> backing_off" in caplog.text


def test_a_closed_link_stays_closed() -> None:
    link = LinkState("worker")
    link.set(ConnectionState.CLOSED)
    link.set(ConnectionState.CLOSED)
    with pytest.raises(RuntimeError, match="closed"):
        link.set(ConnectionState.CONNECTING)


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    low = ReconnectPolicy(0.1, 1.0, rng=lambda: 0.0)
    high = ReconnectPolicy(0.1, 1.0, rng=lambda: 1.0)
    assert [round(low.next_delay(), 3) for _ in range(6)] == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]
    assert [round(high.next_delay(), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    high.reset()
    assert high.next_delay() == pytest.approx(0.1)
    for _ in range(200):  # a long outage neither overflows nor passes the cap
        assert high.next_delay() <= 1.0


def test_a_healthy_session_resets_the_backoff_and_a_short_one_does_not() -> None:
    clock = FakeClock()
    policy = ReconnectPolicy(0.1, 1.0, healthy_after_s=30.0, rng=lambda: 1.0, clock=clock)
    assert [policy.next_delay() for _ in range(5)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0])
    policy.connected()
    clock.now += 29.9  # accepted, then dropped before it proved healthy: keep backing off
    assert policy.next_delay() == pytest.approx(1.0)
    policy.connected()
    clock.now += 30.0
    assert policy.next_delay() == pytest.approx(0.1) == policy.reset_delay_max_s
    assert policy.next_delay() == pytest.approx(0.2)  # the outage goes on: doubling again


def test_every_outage_after_a_healthy_session_starts_from_the_shortest_delay() -> None:
    clock = FakeClock()
    policy = ReconnectPolicy(0.2, 30.0, healthy_after_s=5.0, clock=clock)
    for _ in range(4):
        first = policy.next_delay()
        assert 0.1 <= first <= policy.reset_delay_max_s
        for _ in range(10):  # a long outage reaches the cap
            policy.next_delay()
        assert policy.next_delay() >= 15.0
        policy.connected()
        clock.now += 60.0


def test_delays_that_cannot_work_are_refused() -> None:
    with pytest.raises(ValueError, match="max_s"):
        ReconnectPolicy(5.0, 1.0)
