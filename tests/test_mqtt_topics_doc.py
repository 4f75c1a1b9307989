"""docs/mqtt.md lists every MQTT topic the code makes (wire.topics), and no topic that it does not make."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import wire
from wire import topics

DOC = Path(__file__).resolve().parent.parent / "docs" / "mqtt.md"
GW, CERT = "GWID", "CERTNO"  # stand-ins, written back as the doc's placeholders
TOPIC = re.compile(r"`(rebadge/v1/[^`\s]+)`")
ALTERNATIVES = re.compile(r"\{([a-z_]+(?:,[a-z_]+)+)\}")  # req/{lease,release}: one topic per name


def operations() -> dict[str, str]:
    """Every `*_OP` constant of wire/: the operations of req/, res/ and cmd/ topics, by constant name."""
    found: dict[str, str] = {}
    for module in pkgutil.iter_modules(wire.__path__):
        loaded = importlib.import_module(f"wire.{module.name}")
        found |= {k: v for k, v in vars(loaded).items() if k.endswith("_OP") and isinstance(v, str)}
    return found


def placeholders(topic: str) -> str:
    return topic.replace(GW, "{gw}").replace(CERT, "{cert_no}")


def made_by_the_code() -> set[str]:
    made = {topics.ANOMALIES, topics.CLOUD_READY, topics.ack(GW), topics.cert_progress(CERT), topics.progress(GW, CERT)}
    made |= {f(GW) for f in (topics.status, topics.records, topics.events, topics.health)}
    for op in operations().values():
        made |= {topics.request(GW, op), topics.response(GW, op), topics.command(GW, op)}
    return {placeholders(t) for t in made}


def expand(topic: str) -> set[str]:
    match = ALTERNATIVES.search(topic)
    if match is None:
        return {topic}
    return {t for name in match.group(1).split(",") for t in expand(topic.replace(match.group(0), name, 1))}


def documented() -> set[str]:
    return {t for m in TOPIC.finditer(DOC.read_text()) for t in expand(m.group(1))}


def test_every_topic_the_code_publishes_or_subscribes_is_documented() -> None:
    made, doc = made_by_the_code(), documented()
    fixed = {t for t in made if "/req/" not in t and "/res/" not in t and "/cmd/" not in t}
    assert fixed - doc == set()
    for name, op in operations().items():
        asked = {f"rebadge/v1/gw/{{gw}}/req/{op}", f"rebadge/v1/gw/{{gw}}/res/{op}"}
        commanded = f"rebadge/v1/gw/{{gw}}/cmd/{op}"
        assert asked <= doc or commanded in doc, f"{name} = {op!r}: neither req/res/{op} nor cmd/{op} in docs/mqtt.md"


def test_every_documented_topic_is_one_the_code_makes() -> None:
    assert documented() - made_by_the_code() == set()


def test_the_operations_are_found_and_alternatives_expand() -> None:
    assert {"lease", "release", "renew", "rotate", "scan"} <= set(operations().values())
    assert expand("a/{x,y}/b/{c,d}") == {"a/x/b/c", "a/x/b/d", "a/y/b/c", "a/y/b/d"}
    assert placeholders(topics.progress(GW, CERT)) == "rebadge/v1/gw/{gw}/progress/{cert_no}"
