"""A time zone name that is a tzdata folder (``Europe``) or longer than a file name can be is an
unknown time zone like any other: ``InvalidInputError`` naming ``timezone``, not the bare
``IsADirectoryError`` / ``OSError`` ``zoneinfo`` raises for it, and no store is opened for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.ledger import Ledger

pytestmark = pytest.mark.usefixtures("isolated")


@pytest.mark.parametrize("zone", ["Europe", "America", "a" * 300, "Europe/" + "b" * 300])
def test_a_folder_or_overlong_zone_name_is_an_invalid_timezone(zone: str, tmp_path: Path) -> None:
    db = tmp_path / "tz.db"
    with pytest.raises(InvalidInputError) as raised:
        Ledger(f"sqlite:///{db}", timezone=zone)
    assert raised.value.field == "timezone"
    assert raised.value.value == zone
    assert "IANA" in str(raised.value)
    assert len(str(raised.value)) < 300  # an overlong name is cut in the message, kept in .value
    assert not db.exists()  # refused before the store was opened


def test_a_real_zone_still_works() -> None:
    assert Ledger("memory://", timezone="Europe/Berlin", clock=lambda: 0.0).day() == "1970-01-01"
