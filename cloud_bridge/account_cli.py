"""`rebadge cloud account ...`: console logins of accounts, from the platform host, under the API's rules."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cloud_bridge import accounts, logins
from cloud_bridge.cli import _acting, _run, _with_platform, as_option, data_dir_option, db_url_option
from cloud_bridge.platform import Platform


@click.group()
def account() -> None:
    """Accounts' console logins (create accounts over the API: POST /v1/accounts)."""


@account.command("set-password")
@data_dir_option
@db_url_option
@as_option
@click.argument("target")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
@_run
async def set_password(data_dir: Path, db_url: str | None, account: str, target: str, password_stdin: bool) -> None:
    """Give the account TARGET (id or name) its console password; its user name is the account's name.

    Asks for the password twice unless --password-stdin. Setting it again ends the account's console sessions.
    """
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    logins.check_password_rules(password)  # before the database is opened

    async def body(p: Platform) -> None:
        actor = await _acting(p, account)
        who = await p.run(accounts.acting_as, target)
        assert who.account_id is not None
        await p.run(logins.set_password, actor, who.account_id, password)
        click.echo(f"console password of account {who.account_id} ({who.name}, {who.role.value}) set")

    await _with_platform(data_dir, db_url, body)
