"""MQTT topics: the layout under rebadge/v1, unsafe ids refused, and the gateway id read back from a topic."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from wire import topics


def test_gateway_topics_lie_under_the_gateway_prefix() -> None:
    gw = "24f6ed6acbfe1009"
    prefix = f"rebadge/v1/gw/{gw}"
    assert topics.gw_prefix(gw) == prefix
    assert topics.status(gw) == f"{prefix}/status"
    assert topics.records(gw) == f"{prefix}/records"
    assert topics.events(gw) == f"{prefix}/events"
    assert topics.health(gw) == f"{prefix}/health"
    assert topics.progress(gw, "RC000001") == f"{prefix}/progress/RC000001"
    assert topics.request(gw, "lease") == f"{prefix}/req/lease"
    assert topics.response(gw, "lease") == f"{prefix}/res/lease"
    assert topics.command(gw, "scan") == f"{prefix}/cmd/scan"


def test_platform_topics() -> None:
    assert topics.ack("gw1") == "rebadge/v1/cloud/gw/gw1/ack"
    assert topics.cert_progress("RC000001") == "rebadge/v1/cloud/cert/RC000001/progress"
    assert topics.ANOMALIES == "rebadge/v1/cloud/anomalies"


@pytest.mark.parametrize("bad", ["", "+", "#", "a/b", "a b", "é", "x" * 65, "$SYS", "a\x00"])
def test_unsafe_ids_are_refused_naming_the_value(bad: str) -> None:
    for make in (topics.gw_prefix, topics.status, topics.ack):
        with pytest.raises(ValueError, match="gateway id") as caught:
            make(bad)
        assert repr(bad) in str(caught.value)
    with pytest.raises(ValueError, match="certificate number"):
        topics.progress("gw1", bad)
    with pytest.raises(ValueError, match="certificate number"):
        topics.cert_progress(bad)
    with pytest.raises(ValueError, match="operation"):
        topics.request("gw1", bad)


@pytest.mark.parametrize("maker", [topics.status, topics.records, topics.events, topics.health, topics.gw_prefix])
def test_gw_of_reads_back_the_gateway(maker: Callable[[str], str]) -> None:
    assert topics.gw_of(maker("gw-01.a")) == "gw-01.a"


def test_gw_of_reads_requests_matched_by_wildcard() -> None:
    assert topics.gw_of(topics.request("line7", "lease")) == "line7"


@pytest.mark.parametrize(
    "topic",
    ["rebadge/v1/gw", "rebadge/v1/cloud/gw/x/ack", "other/v1/gw/x/status", "rebadge/v2/gw/x/status", "", "x"],
)
def test_gw_of_refuses_topics_not_under_the_gateway_tree(topic: str) -> None:
    with pytest.raises(ValueError, match="not under rebadge/v1/gw/"):
        topics.gw_of(topic)


@pytest.mark.parametrize("topic", ["rebadge/v1/gw//records", "rebadge/v1/gw/+/records", "rebadge/v1/gw/a b/records"])
def test_gw_of_refuses_an_unsafe_gateway_id(topic: str) -> None:
    with pytest.raises(ValueError, match="gateway id"):
        topics.gw_of(topic)


def test_wildcards_match_the_gateway_topics() -> None:
    assert topics.ALL_RECORDS.replace("+", "gw1") == topics.records("gw1")
    assert topics.ALL_REQUESTS.replace("/+/req/+", "/gw1/req/lease") == topics.request("gw1", "lease")
