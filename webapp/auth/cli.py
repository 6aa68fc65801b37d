"""``flask --app wsgi user create|list|delete|set-password``: user management for operators and tests."""

from __future__ import annotations

import sys

import click
from flask.cli import AppGroup
from sqlalchemy import select

from webapp import system_log
from webapp.auth.accounts import AccountError, create_user, find_user, set_password
from webapp.extensions import db
from webapp.models import User

user_cli = AppGroup("user", help="Manage Lanes users.")


@user_cli.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="Make the user an administrator.")
@click.option("--password-stdin", is_flag=True, help="Read the password from one line of standard input.")
def create(name: str, admin: bool, password_stdin: bool) -> None:
    """Create user NAME."""
    password = _read_password(password_stdin)
    try:
        user = create_user(name, password, is_admin=admin)
    except AccountError as problem:
        raise click.ClickException(str(problem)) from None
    system_log.flush()
    click.echo(f"Created {'admin ' if user.is_admin else ''}user {user.username} (id {user.id}).")


@user_cli.command("set-password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from one line of standard input.")
def change_password(name: str, password_stdin: bool) -> None:
    """Set user NAME's password and sign them out of every browser session."""
    user = find_user(name)
    if user is None:
        raise click.ClickException(f"No user named {name!r}.")
    try:
        ended = set_password(user, _read_password(password_stdin))
    except AccountError as problem:
        raise click.ClickException(str(problem)) from None
    system_log.flush()
    click.echo(f"Changed the password of {name}; ended {ended} browser session(s).")


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


@user_cli.command("list")
def list_users() -> None:
    """List users."""
    for user in db.session.scalars(select(User).order_by(User.id)):
        click.echo(f"{user.id}\t{user.username}\t{'admin' if user.is_admin else 'user'}\t{user.created_at:%Y-%m-%d}")


@user_cli.command("delete")
@click.argument("name")
def delete(name: str) -> None:
    """Delete user NAME with their requests and tokens."""
    user = find_user(name)
    if user is None:
        raise click.ClickException(f"No user named {name!r}.")
    db.session.delete(user)
    db.session.commit()
    system_log.record("user.deleted", subject=name)
    system_log.flush()
    click.echo(f"Deleted user {name}.")

