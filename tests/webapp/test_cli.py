"""``flask --app wsgi user create|list|delete``: what an operator types and reads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import FAST_ARGON2, ROOT, worker_env

NAME_RULES = "User names are 3 to 32 characters of a-z, 0-9, '_', '.' and '-'."


@pytest.fixture
def flask_user(app):
    """Run ``flask user ...`` in-process. The real ``flask`` command pushes an app context for every
    command (FlaskGroup); the test runner calls ``app.cli`` directly, so the test pushes it."""

    def run(*args, input=None):
        with app.app_context():
            return app.test_cli_runner().invoke(args=["user", *args], input=input)

    return run


def test_create_an_admin_from_stdin_who_can_sign_in(flask_user, browser):
    result = flask_user("create", "ops", "--admin", "--password-stdin", input="a long password\n")
    assert result.exit_code == 0, result.output
    assert "Created admin user ops" in result.output
    assert browser.login("ops", "a long password").headers["Location"] == "/console"
    assert browser.client.get("/admin").status_code == 200


def test_create_a_plain_user(flask_user, browser):
    result = flask_user("create", "plain_user", "--password-stdin", input="a long password\n")
    assert result.exit_code == 0
    assert "Created user plain_user" in result.output
    browser.login("plain_user", "a long password")
    assert browser.client.get("/admin").status_code == 403


def test_list_and_delete(flask_user, make_user, browser):
    make_user("alice")
    make_user("root", admin=True)
    listed = flask_user("list")
    assert listed.exit_code == 0
    lines = [line.split("\t") for line in listed.output.strip().splitlines()]
    assert [(line[1], line[2]) for line in lines] == [("alice", "user"), ("root", "admin")]

    deleted = flask_user("delete", "alice")
    assert deleted.exit_code == 0
    assert "Deleted user alice." in deleted.output
    assert "alice" not in flask_user("list").output
    assert browser.login("alice").status_code == 401

    missing = flask_user("delete", "alice")
    assert missing.exit_code != 0
    assert "No user named 'alice'." in missing.output


@pytest.mark.parametrize("name", ["Alice", "ab", "x" * 33, "has space", "semi;colon", "ünï"])
def test_bad_names_are_rejected_with_the_rule(flask_user, name):
    result = flask_user("create", name, "--password-stdin", input="a long password\n")
    assert result.exit_code != 0
    assert NAME_RULES in result.output
    assert name not in flask_user("list").output.split()


def test_taken_names_and_short_passwords_are_rejected(flask_user, make_user):
    make_user("alice")
    taken = flask_user("create", "alice", "--password-stdin", input="a long password\n")
    assert taken.exit_code != 0
    assert "The user name 'alice' is taken." in taken.output
    short = flask_user("create", "bob", "--password-stdin", input="short\n")
    assert short.exit_code != 0
    assert "Passwords need at least 12 characters." in short.output
    common = flask_user("create", "bob", "--password-stdin", input="password1234\n")
    assert common.exit_code != 0
    assert "Choose a less common password." in common.output


def test_the_real_flask_command(app, settings):
    """The command an operator runs, as its own process against the same database."""
    env = worker_env(settings, **FAST_ARGON2)
    env.pop("FLASK_APP", None)
    flask = os.path.join(os.path.dirname(sys.executable), "flask")
    created = subprocess.run(
        [flask, "--app", "wsgi", "user", "create", "cli-admin", "--admin", "--password-stdin"],
        input="a long password\n", capture_output=True, text=True, cwd=ROOT, env=env, timeout=60,
    )
    assert created.returncode == 0, created.stderr
    assert "Created admin user cli-admin" in created.stdout
    listed = subprocess.run(
        [flask, "--app", "wsgi", "user", "list"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60
    )
    assert "cli-admin\tadmin" in listed.stdout
