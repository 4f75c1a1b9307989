"""`rebadge provision line-config`: the agent's commented example config with one line's values set.

It lives in the composer because it validates the result through the agent's own AgentConfig, which provisioning
may not import. The example is edited with tomlkit, so its comments stay and any value (a name with quotes or
backslashes) is written as valid TOML; the file is written 0600, atomically, and never over an existing one unless
--force says so.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import click
import tomlkit
from pydantic import ValidationError
from tomlkit.items import Table

from agent.cli import EXAMPLE_CONFIG
from agent.config import AgentConfig
from durable.files import write_atomically
from provisioning.cli import group as provisioning_group

CONFIG_MODE = 0o600
# Each option and the key of the agent config it sets.
OPTION_KEYS = {
    "--name": ("gateway", "name"),
    "--state-dir": ("gateway", "state_dir"),
    "--issuer-key": ("trust", "issuer_keys"),
    "--mqtt-host": ("mqtt", "host"),
    "--mqtt-port": ("mqtt", "port"),
    "--radios": ("line", "radios"),
    "--certificate": ("line", "certificate"),
}


def edit_example(example: str, values: dict[str, Any]) -> str:
    """`example` (TOML) with each option's value set at its key; comments and layout kept."""
    doc = tomlkit.parse(example)
    for option, value in values.items():
        section, key = OPTION_KEYS[option]
        table = doc.get(section)
        if not isinstance(table, Table):
            raise click.ClickException(f"the example config has no [{section}] table for {option}; update it")
        table[key] = value
    return doc.as_string()


def check_values(text: str) -> None:
    """Validate the written text as the agent will; UsageError names each option whose value it refuses."""
    try:
        AgentConfig.model_validate(tomllib.loads(text))
    except ValidationError as exc:
        refused = []
        for err in exc.errors():
            key = tuple(str(p) for p in err["loc"][:2])
            option = next((o for o, k in OPTION_KEYS.items() if k == key), ".".join(key))
            refused.append(f"  {option} {err.get('input')!r}: {err['msg']}")
        raise click.UsageError("the agent would refuse these values; nothing written:\n" + "\n".join(refused)) from exc


@click.command("line-config")
@click.option("--name", required=True, help="Line name shown on dashboards (gateway.name), e.g. 'hall2-line3'.")
@click.option("--issuer-key", "issuer_keys", multiple=True, required=True,
              help="Platform issuer key to pin (64 hex, from 'rebadge cloud init'); repeat for more.")  # fmt: skip
@click.option("--mqtt-host", default=None, help="The broker (mqtt.host). Default: the example's, 127.0.0.1.")
@click.option("--mqtt-port", default=None, type=int, help="The broker's port (mqtt.port). Default: 1883.")
@click.option("--state-dir", default=None, help="gateway.state_dir. Default: /var/lib/rebadge.")
@click.option("--radios", default=None, help="Comma-separated: wifi, ble, zigbee (line.radios). Default: wifi.")
@click.option("--certificate", default=None, help="Certificate to rebadge under (line.certificate), e.g. RC000001.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True, help="Config file to write.")
@click.option("--force", is_flag=True, help="Replace OUT if it exists (a hand-edited config is lost).")
def line_config_cmd(
    name: str, issuer_keys: tuple[str, ...], mqtt_host: str | None, mqtt_port: int | None, state_dir: str | None,
    radios: str | None, certificate: str | None, out: Path, force: bool,
) -> None:  # fmt: skip
    """Write the commented agent config for one line (0600), checked as the agent will read it."""
    if out.exists() and not force:
        raise click.UsageError(f"{out} exists (it may hold hand edits): nothing written; pass --force to replace it")
    given = {
        "--name": name, "--issuer-key": list(issuer_keys), "--mqtt-host": mqtt_host, "--mqtt-port": mqtt_port,
        "--state-dir": state_dir, "--certificate": certificate,
        "--radios": None if radios is None else [r.strip() for r in radios.split(",") if r.strip()],
    }  # fmt: skip
    text = edit_example(EXAMPLE_CONFIG.read_text(), {o: v for o, v in given.items() if v is not None})
    check_values(text)
    try:
        write_atomically(out, text.encode(), CONFIG_MODE)
    except OSError as exc:
        raise click.ClickException(f"cannot write {out}: {exc.strerror}; nothing written") from exc
    click.echo(f"wrote {out}; check it with: rebadge agent check-config {out}")


group = click.Group(
    "provision",
    commands=[*provisioning_group.commands.values(), line_config_cmd],
    help=provisioning_group.help,
)
