"""``tokenbudget serve`` blames ``--port`` only when it cannot bind: an ``OSError`` raised while
building the service (a time zone name that is a tzdata folder, ``Europe``) is not a port problem.

The Ledger refuses such names as ``InvalidInputError('timezone')`` (then the CLI names
``--timezone``); either way the one-line error must not send the user to change the port."""

from __future__ import annotations

import socket

import pytest

from cli_support import assert_one_line_error, run
from tokenbudget_core.cli import EXIT_BAD_INPUT, EXIT_UNAVAILABLE

pytestmark = pytest.mark.usefixtures("isolated")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize("zone", ["Europe", "America", "a" * 300])
def test_serve_with_a_folder_time_zone_does_not_blame_the_port(zone: str) -> None:
    result = run("serve", "--store", "memory://", "--port", str(_free_port()), "--timezone", zone)
    assert result.exit_code in (EXIT_BAD_INPUT, EXIT_UNAVAILABLE), result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "--port" not in lines[0]
    assert "choose another" not in lines[0]
    assert zone[:20] in lines[0]  # the name the user typed is shown


def test_serve_with_an_unknown_time_zone_names_the_flag_not_the_port() -> None:
    result = run("serve", "--store", "memory://", "--port", str(_free_port()), "--timezone", "Europe/")
    assert_one_line_error(result, EXIT_BAD_INPUT, "--timezone")
    assert "--port" not in result.stderr


def test_a_port_that_cannot_be_bound_is_still_the_ports_problem() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", "--store", "memory://", "--port", str(port), "--timezone", "Europe/Berlin")
    assert_one_line_error(result, EXIT_UNAVAILABLE, "--port", f"127.0.0.1:{port}", "choose another --port")


def test_a_host_that_is_not_of_this_machine_is_the_hosts_problem() -> None:
    result = run("serve", "--store", "memory://", "--host", "192.0.2.1", "--port", "8000", "--allow-no-auth")
    assert_one_line_error(result, EXIT_UNAVAILABLE, "--port", "192.0.2.1:8000", "--host")
