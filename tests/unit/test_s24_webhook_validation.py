"""``Webhook(url, timeout_s=)`` refuses what would lose every alert, as ``Ledger(alerts=[url])``
does for a string (re-review s24 F2, F3). Before: a timeout past what a socket takes (1e10 s, "never
time out") was accepted, and every POST failed with ``OverflowError`` (each alert logged lost, none
sent); a ``file://`` URL was accepted and urllib "answered" the POST by reading the file (the alert
counted delivered, nothing sent, nothing logged)."""

from __future__ import annotations

import pytest

from tokenbudget_core import Webhook
from tokenbudget_core.alerts import MAX_TIMEOUT_S
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger


@pytest.mark.parametrize("timeout_s", [1e10, 1e300, MAX_TIMEOUT_S + 1])
def test_a_timeout_no_socket_takes_is_refused(timeout_s: float) -> None:
    with pytest.raises(InvalidInputError) as info:
        Webhook("https://hooks.example.com/tb", timeout_s=timeout_s)
    assert info.value.field == "timeout_s"


def test_the_longest_timeout_is_taken() -> None:
    assert Webhook("https://hooks.example.com/tb", timeout_s=MAX_TIMEOUT_S).timeout_s == MAX_TIMEOUT_S


@pytest.mark.parametrize("url", ["file://localhost/tmp/hook.txt", "ftp://127.0.0.1:1/x", "gopher://h/x"])
def test_a_url_that_is_not_http_is_refused_as_the_ledger_refuses_it(url: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        Webhook(url)
    assert info.value.field == "url"
    assert "http" in str(info.value)
    with pytest.raises(InvalidInputError):
        Ledger("memory://", alerts=[url])
