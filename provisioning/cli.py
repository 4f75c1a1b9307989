"""`rebadge provision ...`: enrol a gateway, write the broker's configuration (line-config: rebadge.line_config)."""

from __future__ import annotations

from pathlib import Path

import click

from provisioning.broker_config import (
    DEFAULT_AUTOSAVE_CHANGES,
    DEFAULT_PORT,
    PLATFORM_IDENTITY,
    BrokerSettings,
    write_broker_config,
)
from provisioning.enrolment import EnrolmentError, enrol
from wire.times import utc_iso


@click.group()
def group() -> None:
    """Enrol gateways and set up lines."""


@group.command("enrol")
@click.option(
    "--state-dir", type=click.Path(path_type=Path, file_okay=False), default="/var/lib/rebadge", show_default=True,
    help="The agent's [gateway] state_dir: gateway.key is here, and the enrolled files go here.",
)  # fmt: skip
@click.option("--platform", "platform_url", required=True, help="The platform's API, e.g. https://platform:8080.")
@click.option("--token", required=True, envvar="REBADGE_ENROL_TOKEN", help="One-time enrolment token (or env).")
@click.option("--platform-ca", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="CA file to check the platform's HTTPS certificate with (default: the system's).")  # fmt: skip
def enrol_cmd(state_dir: Path, platform_url: str, token: str, platform_ca: Path | None) -> None:
    """Enrol this gateway: exchange a one-time token and a CSR for the broker's client certificate."""
    try:
        files = enrol(state_dir, platform_url, token, platform_ca=platform_ca)
    except EnrolmentError as exc:
        raise click.ClickException(str(exc)) from exc
    until = utc_iso(files.not_after)
    click.echo(f"enrolled gateway {files.gw}; its certificate is valid until {until}")
    click.echo("add to the agent's config (and point [mqtt] host/port at the broker's TLS listener, e.g. 8883):\n")
    click.echo(files.config_lines())


@group.command("broker-config")
@click.option("--ca-dir", type=click.Path(path_type=Path, file_okay=False, exists=True), required=True,
              help="The platform's data dir, holding its CA (ca.key, ca.crt).")  # fmt: skip
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True, help="Directory to write.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535))
@click.option("--bind", default="0.0.0.0", show_default=True, help="Address the TLS listener binds.")  # noqa: S104
@click.option("--dns-name", "dns_names", multiple=True, default=("localhost",), show_default=True,
              help="A name gateways reach the broker by (in its certificate); repeat for more.")  # fmt: skip
@click.option("--ip", "ip_addresses", multiple=True, default=("127.0.0.1",), show_default=True,
              help="An address gateways reach the broker at (in its certificate); repeat for more.")  # fmt: skip
@click.option("--platform-identity", default=PLATFORM_IDENTITY, show_default=True,
              help="CN of the platform's own client certificate.")  # fmt: skip
@click.option("--user", default="mosquitto", show_default=True, help="The user mosquitto drops to.")
@click.option("--valid-days", default=365, show_default=True, type=click.IntRange(1, 3650))
@click.option("--autosave-changes", default=DEFAULT_AUTOSAVE_CHANGES, show_default=True, type=click.IntRange(1),
              help="Save the persistence file after this many changes (1: nothing is lost to a SIGKILL).")  # fmt: skip
def broker_config_cmd(
    ca_dir: Path, out: Path, port: int, bind: str, dns_names: tuple[str, ...], ip_addresses: tuple[str, ...],
    platform_identity: str, user: str, valid_days: int, autosave_changes: int,
) -> None:  # fmt: skip
    """Write a mosquitto configuration: mTLS, identities from certificates, a per-gateway ACL, persistence."""
    settings = BrokerSettings(
        out, port=port, bind=bind, dns_names=dns_names, ip_addresses=ip_addresses,
        platform_identity=platform_identity, user=user, valid_days=valid_days, autosave_changes=autosave_changes,
    )  # fmt: skip
    try:
        files = write_broker_config(ca_dir, settings)
    except (EnrolmentError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(
            f"--out {out}: the broker's files cannot be written there ({exc.strerror}: {exc.filename}); "
            "choose a directory this user may write"
        ) from exc
    for path in files:
        click.echo(f"wrote {path}")
    click.echo(f"run: mosquitto -c {out / 'mosquitto.conf'}")
    click.echo(f"the platform connects with {out / 'platform.crt'} and {out / 'platform.key'} (CN {platform_identity})")
