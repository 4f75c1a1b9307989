"""`rebadge` with subcommand groups; each group is imported only when it is used."""

from __future__ import annotations

import importlib
import logging
import os

import click

GROUPS = {
    "agent": ("agent.cli", "group", "Run the gateway agent and manage its journal and leases."),
    "cloud": ("cloud_bridge.cli", "group", "Run the platform: certificates, leases, ingest, API."),
    "provision": ("rebadge.line_config", "group", "Enrol gateways and set up lines."),
    "sim": ("simulator.cli", "group", "Run simulated finished goods for tests and demos."),
    "demo": ("rebadge.demo", "command", "Run a whole line on this machine: platform, broker, agent, goods."),
}


class LazyGroup(click.Group):
    """Imports a subcommand's module only when that subcommand runs, so the agent starts without the platform."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(GROUPS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in GROUPS:
            return None
        module, attr, _ = GROUPS[cmd_name]
        try:
            cmd = getattr(importlib.import_module(module), attr)
        except ImportError as exc:
            raise click.ClickException(
                f"'rebadge {cmd_name}' needs a part that is not installed ({exc.name}); "
                "install it from the rebadge checkout: pip install '.[platform]' (or '.[dev]' for everything)"
            ) from exc
        assert isinstance(cmd, click.Command)
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, helptext) for name, (_, _, helptext) in GROUPS.items()])


@click.group(cls=LazyGroup)
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """rebadge: rewrite product IDs of finished goods on the line, under a quota the platform signs."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(
        level=os.environ.get("REBADGE_LOG_LEVEL", logging.getLevelName(level)),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


if __name__ == "__main__":
    main()
