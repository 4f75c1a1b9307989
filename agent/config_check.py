"""`rebadge agent check-config`: every reason a config would stop the agent, found without creating anything.

The agent's start (`run`, `console`) makes the same checks before it touches the state dir, and the service's
ExecStartPre runs `check-config`, so a bad config is reported once instead of crash-looping the unit.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.certs.identity import GatewayIdentity
from agent.config import AgentConfig, config_fingerprint, load_config
from agent.errors import AgentError, ConfigError
from agent.radios.registry import RADIO_LIBRARIES, library_missing
from agent.scanners import check_scanner_libraries
from agent.service import pinned_issuers
from agent.uplink.connection import check_config as check_mqtt_config


@dataclass(frozen=True)
class CheckedConfig:
    """A config the agent can start with, and the gateway it belongs to (None: no key yet, made at first start)."""

    config: AgentConfig
    gw: str | None

    def summary(self, source: str) -> str:
        """The one line `check-config` prints for a good config."""
        gw = self.gw or "not made yet (the first start makes its key)"
        radios = ", ".join(r.value for r in self.config.line.radios)
        return f"{source}: OK: gateway {gw}, radios {radios}, fingerprint {config_fingerprint(self.config)}"


def _radio_libraries(config: AgentConfig) -> None:
    for kind in config.line.radios:
        module = RADIO_LIBRARIES.get(kind)
        if module is not None and importlib.util.find_spec(module) is None:
            raise library_missing(kind, module)


def startup_problems(config: AgentConfig) -> list[str]:
    """What stops a valid config at start: no pinned issuer, a broker setting that cannot work, a missing library."""
    checks: list[Callable[[], object]] = [
        lambda: pinned_issuers(config),
        lambda: check_mqtt_config(config.mqtt),
        lambda: check_scanner_libraries(config.scanner),
        lambda: _radio_libraries(config),
    ]
    problems = []
    for check in checks:
        try:
            check()
        except ConfigError as exc:
            problems.append(f"  {exc}")
    return problems


def check_startable(config: AgentConfig) -> None:
    """ConfigError listing every startup problem of `config` (nothing is created)."""
    problems = startup_problems(config)
    if problems:
        raise ConfigError("the agent cannot start with this configuration:\n" + "\n".join(problems))


def check_config_file(path: Path) -> CheckedConfig:
    """Load and check `path` (under the environment); ConfigError lists every problem. Creates nothing."""
    config = load_config(path)
    check_startable(config)
    try:
        identity = GatewayIdentity.load_existing(config.gateway.state_dir)
    except (AgentError, OSError) as exc:
        raise ConfigError(f"gateway.state_dir {config.gateway.state_dir}: {exc}") from exc
    return CheckedConfig(config, None if identity is None else identity.gw)
