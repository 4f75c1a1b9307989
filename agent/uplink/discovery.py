"""Home Assistant MQTT discovery: one sensor per counter of each certificate's progress topic."""

from __future__ import annotations

import json
import re

from wire import topics

HA_PREFIX = "homeassistant"
# Home Assistant's birth and last will: "online" when it (re)starts, the cue to send discovery configs again.
HA_STATUS = f"{HA_PREFIX}/status"
HA_ONLINE = b"online"
# Another client on the broker may repeat "online": configs are sent again at most this often.
HA_REPUBLISH_MIN_S = 10.0
COUNTERS = ("confirmed", "in_doubt", "refused", "remaining")
# Home Assistant allows only these characters in a discovery node or object id.
_NOT_ID = re.compile(r"[^0-9A-Za-z_-]")


def unique_id(gw: str, cert_no: str, counter: str) -> str:
    """The entity's unique id across gateways: rebadge_<gw>_<cert>_<counter>."""
    return _NOT_ID.sub("_", f"rebadge_{gw}_{cert_no}_{counter}")


def config_topic(gw: str, cert_no: str, counter: str) -> str:
    """Where the retained discovery config of one counter lives: HA's node_id form, the gateway id as node.

    The gateway id is a topic level of its own so the broker's ACL (`pattern write homeassistant/+/%u/#`) can
    confine each gateway to its own configs; an ACL pattern cannot match the id inside a level.
    """
    return f"{HA_PREFIX}/sensor/{gw}/{_NOT_ID.sub('_', f'{cert_no}_{counter}')}/config"


def discovery_configs(gw: str, cert_no: str, *, name: str = "", version: str = "") -> dict[str, bytes]:
    """Retained discovery configs (topic -> JSON) for the counters of `cert_no` on this gateway."""
    device = {
        "identifiers": [f"rebadge_{gw}"],
        "name": f"rebadge {name or gw}",
        "manufacturer": "rebadge",
        "model": "gateway agent",
        "sw_version": version,
    }
    out = {}
    for counter in COUNTERS:
        config = {
            "name": f"{cert_no} {counter.replace('_', ' ')}",
            "unique_id": unique_id(gw, cert_no, counter),
            "state_topic": topics.progress(gw, cert_no),
            "value_template": f"{{{{ value_json.{counter} }}}}",
            "availability_topic": topics.status(gw),
            "availability_template": "{{ value_json.state }}",
            "payload_available": "online",
            "payload_not_available": "offline",
            "unit_of_measurement": "units",
            "state_class": "measurement",
            "icon": "mdi:counter",
            "device": device,
        }
        out[config_topic(gw, cert_no, counter)] = json.dumps(config, sort_keys=True).encode()
    return out
