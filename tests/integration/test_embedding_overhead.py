"""The package's own embedding calls are charged to the payer and reported as overhead.

The semantic cache and the learned router embed prompts; with a paid embedding model every such
call costs money. Given a ledger, each paid call is recorded there (``Ledger.record``): under the
current attribution, as overhead, priced on the embedding model; the provider's reported tokens
when the reply carries them (the OpenAI SDK's), else the texts counted with the model's tokenizer
and flagged estimated. An unknown model is recorded unpriced; a local one records nothing.

The embedding models are real: langchain-openai's ``OpenAIEmbeddings`` and the OpenAI SDK over
sockets to a loopback ``/v1/embeddings`` server, LlamaIndex and LangChain embedding classes.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import tiktoken
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_openai import OpenAIEmbeddings
from llama_index.core.embeddings import MockEmbedding
from pydantic import SecretStr

from langchain_tokenbudget import BudgetCallbackHandler, TokenBudgetLLMCache
from tokenbudget_core import HashingEmbedder, SemanticCache, TierRouter, Usage, attribute, cost_of
from tokenbudget_core.cache_keys import CacheRequest
from tokenbudget_core.cached_response import CachedResponse
from tokenbudget_core.embeddings import as_embedder
from tokenbudget_core.errors import InvalidInputError
from tokenbudget_core.learned_classifier import NearestNeighbourClassifier
from tokenbudget_core.ledger import Ledger
from tokenbudget_core.linear_classifier import LinearComplexityClassifier
from tokenbudget_core.money import usd_to_nanos
from tokenbudget_core.reports import build_report

pytestmark = pytest.mark.integration

EMBEDDING = "text-embedding-3-small"
CL100K = tiktoken.get_encoding("cl100k_base")
REPORTED_PER_TEXT = 7
"""The loopback server bills each input this many tokens, whatever its length (so a reported
figure is told apart from a count)."""


class _EmbeddingsHandler(BaseHTTPRequestHandler):
    server: _EmbeddingsServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if "inputs" in body:  # Hugging Face (Inference API, Endpoints, TEI): a bare list of vectors
            texts = body["inputs"] if isinstance(body["inputs"], list) else [body["inputs"]]
            self.server.inputs.append(texts)
            self._send([_vector(json.dumps(text)) for text in texts])
            return
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        self.server.inputs.append(inputs)
        data = [
            {"object": "embedding", "index": i, "embedding": _vector(json.dumps(text))}
            for i, text in enumerate(inputs)
        ]
        tokens = REPORTED_PER_TEXT * len(inputs)
        payload = {
            "object": "list",
            "data": data[::-1],  # out of order: the reply's index says which text each is
            "model": body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        self._send(payload)

    def _send(self, payload: object) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _EmbeddingsServer(ThreadingHTTPServer):
    inputs: list[list[Any]]


def _vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [b / 255 for b in digest[:16]]


@pytest.fixture
def embeddings_server() -> Iterator[_EmbeddingsServer]:
    """A loopback OpenAI ``/v1/embeddings`` endpoint (answering Hugging Face's ``inputs`` too)."""
    server = _EmbeddingsServer(("127.0.0.1", 0), _EmbeddingsHandler)
    server.inputs = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def base_url(server: _EmbeddingsServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}/v1"


def make_ledger(tmp_path: Path) -> Ledger:
    return Ledger("memory://", spool_path=tmp_path / "spool.jsonl")


def rows(ledger: Ledger) -> dict[str, dict[str, int]]:
    return {r.rollup_key: r.values for r in ledger.store.rollup([ledger.day()])}


def nanos(tokens: int, model: str = EMBEDDING) -> int:
    return usd_to_nanos(cost_of(Usage(input_tokens=tokens), model))


def ask(text: str) -> CacheRequest:
    return CacheRequest.from_text(model="gpt-4o-mini", prompt=text, params={"temperature": 0})


class PaidEmbeddings(DeterministicFakeEmbedding):
    """A LangChain ``Embeddings`` naming a paid model (vectors made locally, like a test double)."""

    model: str = EMBEDDING


class PaidLlamaEmbedding(MockEmbedding):
    """A LlamaIndex ``BaseEmbedding`` naming a paid model (vectors made locally)."""


def test_the_semantic_cache_behind_a_langchain_model_charges_its_embeddings_as_overhead(
    tmp_path: Path,
) -> None:
    """The reviewer's case: only the chat calls were in the ledger, overhead_usd was 0."""
    ledger = make_ledger(tmp_path)
    reply = AIMessage(
        "Settings > Export.",
        usage_metadata={"input_tokens": 20, "output_tokens": 4, "total_tokens": 24},
        response_metadata={"model_name": "gpt-4o-mini"},
    )
    model = GenericFakeChatModel(messages=iter([reply, reply]))
    model.cache = TokenBudgetLLMCache(
        SemanticCache(embedder=PaidEmbeddings(size=64), threshold=0.99, ledger=ledger)
    )
    handler = BudgetCallbackHandler(ledger, model="gpt-4o-mini")
    questions = ["How do I export my workspace?", "Where do I change my password?"]
    with attribute(feature="support", user="u-1"):
        for q in questions:
            model.invoke(q, config={"callbacks": [handler]})
    embedded = rows(ledger)[f"support/u-1/{EMBEDDING}"]
    # Each question embedded once: its lookup's vector is the one the miss's answer is stored under.
    tokens = sum(len(CL100K.encode(q)) for q in questions)
    assert (embedded["requests"], embedded["input_tokens"], embedded["output_tokens"]) == (2, tokens, 0)
    assert embedded["cost_nanos"] == embedded["overhead_nanos"] == nanos(tokens) > 0
    assert embedded["estimated"] == 2  # counted: LangChain's Embeddings report no usage
    totals = build_report(ledger, last_days=1).totals
    assert totals.overhead_usd == Decimal(nanos(tokens)) / 10**9
    assert rows(ledger)["support/u-1/gpt-4o-mini"]["overhead_nanos"] == 0


def test_langchain_openai_embeddings_over_http_are_counted_with_their_tokenizer(
    tmp_path: Path, embeddings_server: _EmbeddingsServer
) -> None:
    ledger = make_ledger(tmp_path)
    embeddings = OpenAIEmbeddings(
        model=EMBEDDING, base_url=base_url(embeddings_server), api_key=SecretStr("t")
    )
    cache = SemanticCache(embedder=embeddings, ledger=ledger)
    question = "How do I export my workspace?"
    with attribute(feature="support", user="u-2"):
        assert cache.lookup(ask(question)) is None
    assert len(embeddings_server.inputs) == 1  # the call went out
    row = rows(ledger)[f"support/u-2/{EMBEDDING}"]
    tokens = len(CL100K.encode(question))
    assert (row["requests"], row["input_tokens"], row["estimated"]) == (1, tokens, 1)
    assert row["overhead_nanos"] == nanos(tokens)


async def test_a_miss_and_the_store_of_its_answer_are_one_embedding_call(
    tmp_path: Path, embeddings_server: _EmbeddingsServer
) -> None:
    """The reviewer's case: the store after a miss sent the same text to the provider again, so
    the ledger showed two paid overhead calls per miss."""
    ledger = make_ledger(tmp_path)
    embeddings = OpenAIEmbeddings(
        model=EMBEDDING, base_url=base_url(embeddings_server), api_key=SecretStr("t")
    )
    cache = SemanticCache(embedder=embeddings, ledger=ledger)
    answer = CachedResponse(content="Settings > Export.", model="gpt-4o-mini", usage=Usage(output_tokens=4))
    with attribute(feature="support", user="u-6"):
        assert cache.lookup(ask("How do I export my workspace?")) is None
        assert cache.store(ask("How do I export my workspace?"), answer)
        assert await cache.alookup(ask("Where do I change my password?")) is None
        assert await cache.astore(ask("Where do I change my password?"), answer)
        hit = cache.lookup(ask("How do I export my workspace?"))  # the stored vector is served
    assert hit is not None
    assert hit.score == pytest.approx(1.0)
    assert len(embeddings_server.inputs) == 3  # two misses, one hit: nothing embedded again to store
    row = rows(ledger)[f"support/u-6/{EMBEDDING}"]
    tokens = sum(
        len(CL100K.encode(q)) for q in ("How do I export my workspace?", "Where do I change my password?")
    )
    tokens += len(CL100K.encode("How do I export my workspace?"))
    assert (row["requests"], row["input_tokens"], row["overhead_nanos"]) == (3, tokens, nanos(tokens))
    assert build_report(ledger, last_days=1).totals.overhead_requests == 3


async def test_a_hugging_face_inference_client_is_charged(
    tmp_path: Path, embeddings_server: _EmbeddingsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reviewer's case: hosted Hugging Face inference (the Inference API, Inference
    Endpoints, a TEI server: ``huggingface_hub``'s client, which LangChain's and LlamaIndex's
    endpoint classes call) bills each call, but any module naming "huggingface" was taken for a
    local model and nothing was recorded. An unpriced model is recorded unpriced."""
    import huggingface_hub
    from huggingface_hub import AsyncInferenceClient, InferenceClient

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # a loopback server
    host, port = embeddings_server.server_address[:2]
    url = f"http://{host!s}:{port}"
    client, aclient = InferenceClient(base_url=url, token="t"), AsyncInferenceClient(base_url=url, token="t")
    model = "BAAI/bge-small-en-v1.5"
    ledger = make_ledger(tmp_path)
    with attribute(feature="search"):
        vectors = as_embedder(client.feature_extraction, model=model, ledger=ledger).embed(["a", "b c"])
        avectors = await as_embedder(aclient.feature_extraction, model=model, ledger=ledger).aembed(["d"])
    assert (vectors.shape, avectors.shape) == ((2, 16), (1, 16))
    assert embeddings_server.inputs == [["a", "b c"], ["d"]]
    row = rows(ledger)["search//BAAI%2Fbge-small-en-v1.5"]
    assert (row["requests"], row["unpriced"], row["cost_nanos"], row["estimated"]) == (2, 2, 0, 2)
    await aclient.close()
    client.close()


async def test_an_openai_sdk_reply_is_charged_the_tokens_it_reports(
    tmp_path: Path, embeddings_server: _EmbeddingsServer
) -> None:
    """A callable returning the SDK's reply: its usage is what is charged, not flagged estimated;
    the model is the one the reply names."""
    ledger = make_ledger(tmp_path)
    client = openai.OpenAI(base_url=base_url(embeddings_server), api_key="t", max_retries=0)
    aclient = openai.AsyncOpenAI(base_url=base_url(embeddings_server), api_key="t", max_retries=0)

    def embed(texts: list[str]) -> Any:
        return client.embeddings.create(model=EMBEDDING, input=texts)

    async def aembed(texts: list[str]) -> Any:
        return await aclient.embeddings.create(model=EMBEDDING, input=texts)

    texts = ["What is a token?", "Design a sharded database."]
    with attribute(feature="router", user="u-3"):
        vectors = as_embedder(embed, ledger=ledger).embed(texts)
        avectors = await as_embedder(aembed, ledger=ledger).aembed(texts)
    expected = as_embedder(lambda ts: [_vector(json.dumps(t)) for t in ts]).embed(texts)
    assert np.allclose(vectors, expected)  # rows in the order of the texts, not of the reply
    assert np.allclose(avectors, expected)
    row = rows(ledger)[f"router/u-3/{EMBEDDING}"]
    billed = 2 * REPORTED_PER_TEXT * len(texts)
    assert (row["requests"], row["input_tokens"], row["estimated"]) == (2, billed, 0)
    assert row["cost_nanos"] == nanos(billed)
    assert row["overhead_nanos"] == 0  # called by the app itself, outside the package: its own call
    client.close()
    await aclient.close()


@pytest.mark.parametrize("kind", ["knn", "linear"])
def test_the_learned_router_charges_fitting_and_each_classification_as_overhead(
    tmp_path: Path, kind: str
) -> None:
    ledger = make_ledger(tmp_path)
    examples = [("what is a token", "small"), ("design a sharded database", "large")]
    with attribute(feature="setup"):
        if kind == "knn":
            clf: Any = NearestNeighbourClassifier.fit(
                examples, embedder=PaidEmbeddings(size=32), ledger=ledger, k=1
            )
        else:  # the linear classifier took no ledger: its embedding calls went unrecorded
            clf = LinearComplexityClassifier.fit(examples, embedder=PaidEmbeddings(size=32), ledger=ledger)
    with attribute(feature="chat", user="u-4"):
        TierRouter({"small": "gpt-4o-mini", "large": "gpt-4o"}, classifier=clf, ledger=ledger).route(
            "what is a token?"
        )
    fitted, classified = rows(ledger)[f"setup//{EMBEDDING}"], rows(ledger)[f"chat/u-4/{EMBEDDING}"]
    fit_tokens = sum(len(CL100K.encode(p)) for p, _ in examples)
    # Fitting is the app's own call (charged, not overhead); classifying is the router's overhead.
    assert (fitted["input_tokens"], fitted["cost_nanos"]) == (fit_tokens, nanos(fit_tokens))
    assert fitted["overhead_nanos"] == 0
    assert (classified["requests"], classified["input_tokens"]) == (1, len(CL100K.encode("what is a token?")))
    assert classified["overhead_nanos"] == classified["cost_nanos"] > 0


async def test_a_llamaindex_embedding_in_the_semantic_cache_is_charged_async_too(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path)
    cache = SemanticCache(embedder=PaidLlamaEmbedding(embed_dim=16, model_name=EMBEDDING), ledger=ledger)
    answer = CachedResponse(content="Settings > Export.", model="gpt-4o-mini", usage=Usage(output_tokens=4))
    with attribute(feature="support", user="u-5"):
        assert await cache.astore(ask("How do I export?"), answer)
        assert await cache.alookup(ask("How do I export?")) is not None
    row = rows(ledger)[f"support/u-5/{EMBEDDING}"]
    tokens = 2 * len(CL100K.encode("How do I export?"))
    assert (row["requests"], row["input_tokens"], row["overhead_nanos"]) == (2, tokens, nanos(tokens))


def test_an_unknown_embedding_model_is_recorded_unpriced_never_refused(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path)

    class AcmeEmbeddings(DeterministicFakeEmbedding):
        model: str = "acme-embed-7"

    cache = SemanticCache(embedder=AcmeEmbeddings(size=16), ledger=ledger)
    with attribute(feature="support"):
        assert cache.lookup(ask("How do I export?")) is None
    row = rows(ledger)["support//acme-embed-7"]
    assert (row["requests"], row["unpriced"], row["cost_nanos"], row["estimated"]) == (1, 1, 0, 1)
    assert build_report(ledger, last_days=1).totals.unpriced_requests == 1


def test_local_embedders_cost_nothing_and_record_nothing(tmp_path: Path) -> None:
    ledger = make_ledger(tmp_path)
    local = [
        HashingEmbedder(),
        DeterministicFakeEmbedding(size=16),  # no model named
        MockEmbedding(embed_dim=16),  # LlamaIndex's "unknown" model
        MockEmbedding(embed_dim=16, model_name="sentence-transformers/all-MiniLM-L6-v2"),
        lambda texts: [[1.0, float(len(t))] for t in texts],  # a callable naming no model
    ]
    for embedder in local:
        SemanticCache(embedder=embedder, ledger=ledger).lookup(ask("How do I export?"))
    # A test double naming a paid model runs locally all the same; a model said to be free too.
    as_embedder(MockEmbedding(embed_dim=8, model_name=EMBEDDING), ledger=ledger).embed(["How do I export?"])
    as_embedder(PaidEmbeddings(size=8), ledger=ledger, paid=False).embed(["How do I export?"])
    assert rows(ledger) == {}


def test_an_embedder_keeps_its_own_ledger_and_options_are_checked(tmp_path: Path) -> None:
    mine, cache_ledger = make_ledger(tmp_path), Ledger("memory://", spool_path=tmp_path / "other.jsonl")
    embedder = as_embedder(PaidEmbeddings(size=8), ledger=mine)
    cache = SemanticCache(embedder=embedder, ledger=cache_ledger)
    assert cache.embedder is embedder
    cache.lookup(ask("How do I export?"))
    assert list(rows(mine)) == [f"//{EMBEDDING}"]
    assert rows(cache_ledger) == {}
    with pytest.raises(InvalidInputError, match="ledger"):
        as_embedder(PaidEmbeddings(size=8), ledger="memory://")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="paid"):
        as_embedder(PaidEmbeddings(size=8), paid="yes")  # type: ignore[arg-type]


def test_a_reply_as_a_plain_dict_is_read_as_the_sdk_s(tmp_path: Path) -> None:
    """An OpenAI-shaped reply decoded as JSON (a raw HTTP client): its usage and model are used."""
    ledger = make_ledger(tmp_path)

    def embed(texts: list[str]) -> dict[str, Any]:
        data = [{"index": i, "embedding": _vector(t)} for i, t in enumerate(texts)]
        return {"data": data, "model": "text-embedding-3-large", "usage": {"total_tokens": 11}}

    cache = SemanticCache(embedder=embed, ledger=ledger)
    with attribute(feature="support"):
        assert cache.lookup(ask("How do I export?")) is None
    row = rows(ledger)["support//text-embedding-3-large"]
    assert (row["input_tokens"], row["estimated"]) == (11, 0)
    assert row["overhead_nanos"] == row["cost_nanos"] == nanos(11, "text-embedding-3-large")
