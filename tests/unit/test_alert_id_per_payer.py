"""Two payers' alerts never share an ``Alert.id`` (the webhook's Idempotency-Key a receiver
de-duplicates by), even when their scope text reads alike: the id covers the feature and the user
as the calls name them, not only the unescaped display text."""

from __future__ import annotations

import json

from tokenbudget_core.alerts import Alert


def _alert(scope: str, feature: str | None, user: str | None) -> Alert:
    return Alert(
        day="2026-11-24",
        budget="user_daily_tokens",
        scope=scope,
        threshold=0.8,
        used="85",
        limit="100",
        feature=feature,
        user=user,
    )


def test_payers_whose_scope_text_reads_alike_get_different_ids() -> None:
    text = "feature=chat user=alice user=bob"
    bob = _alert(text, "chat user=alice", "bob")
    alice = _alert(text, "chat", "alice user=bob")
    assert bob.id != alice.id


def test_no_feature_and_a_feature_named_dash_get_different_ids() -> None:
    text = "feature=- user=carol"
    assert _alert(text, None, "carol").id != _alert(text, "-", "carol").id


def test_the_id_is_the_same_for_the_same_crossing_and_unicode_safe() -> None:
    a = _alert("feature=x user=\udcff", "x", "\udcff")  # a lone surrogate (an undecodable name)
    assert a.id == _alert("feature=x user=\udcff", "x", "\udcff").id
    assert a.id.startswith("tb-alert-")


def test_the_webhook_body_carries_feature_and_user() -> None:
    body = json.loads(json.dumps(_alert("feature=chat user=bob", "chat", "bob").as_dict()))
    assert (body["feature"], body["user"]) == ("chat", "bob")
