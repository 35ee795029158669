"""A Redis refusal reads as one sentence per part: Redis's reply often ends with a period
(``...or user is disabled.``), which was followed by the message's own (``disabled.. The
URL's``). The message is what the service's ``store_refused`` body and the CLI's ``error:``
line show."""

from __future__ import annotations

import pytest

from tokenbudget_core.errors import StoreRefusedError
from tokenbudget_core.stores.redis import RedisRefusedError

STORE = "redis://:***@127.0.0.1:6379/0"
WRONGPASS = "AuthenticationError: invalid username-password pair or user is disabled."
FIX = "The URL's user or password is wrong or missing"


@pytest.mark.parametrize("reason", [WRONGPASS, WRONGPASS[:-1], WRONGPASS + " ", WRONGPASS + ".."])
def test_the_message_has_one_period_between_the_reply_and_the_fix(reason: str) -> None:
    error = RedisRefusedError(STORE, reason, fix=FIX)
    assert str(error) == (
        f"Redis at {STORE} refused a ledger operation: "
        f"AuthenticationError: invalid username-password pair or user is disabled. {FIX}"
    )
    assert error.reason == reason  # Redis's reply itself, as it came
    assert isinstance(error, StoreRefusedError)


def test_the_default_fix_reads_cleanly_too() -> None:
    error = RedisRefusedError(STORE, "NOPERM this user has no permissions to run the 'evalsha' command.")
    assert ".." not in str(error)
    assert "command. Check the server's ACL" in str(error)
