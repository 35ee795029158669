"""Fixtures for integration tests: the loopback provider server and official SDK clients on it,
and a Redis server the tests may stop and restart."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import anthropic
import openai
import pytest
from provider_server import ProviderServer

from redis_server import RedisServer


@pytest.fixture(scope="session")
def _provider_server_session() -> Iterator[ProviderServer]:
    server = ProviderServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def provider_server(_provider_server_session: ProviderServer) -> Iterator[ProviderServer]:
    """The running loopback server, reset before each test; fails the test if a handler crashed."""
    server = _provider_server_session
    server.reset()
    yield server
    errors = list(server.errors)
    server.reset()
    assert not errors, f"the provider server raised: {errors!r}"


@pytest.fixture
def openai_client(provider_server: ProviderServer) -> Iterator[openai.OpenAI]:
    """The official OpenAI client, pointed at the loopback server, without retries."""
    client = openai.OpenAI(base_url=provider_server.url + "/v1", api_key="test", max_retries=0)
    with client:
        yield client


@pytest.fixture
async def async_openai_client(provider_server: ProviderServer) -> AsyncIterator[openai.AsyncOpenAI]:
    """Async twin of ``openai_client``."""
    client = openai.AsyncOpenAI(base_url=provider_server.url + "/v1", api_key="test", max_retries=0)
    async with client:
        yield client


@pytest.fixture
def anthropic_client(provider_server: ProviderServer) -> Iterator[anthropic.Anthropic]:
    """The official Anthropic client, pointed at the loopback server, without retries."""
    client = anthropic.Anthropic(base_url=provider_server.url, api_key="test", max_retries=0)
    with client:
        yield client


@pytest.fixture
async def async_anthropic_client(provider_server: ProviderServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    """Async twin of ``anthropic_client``."""
    client = anthropic.AsyncAnthropic(base_url=provider_server.url, api_key="test", max_retries=0)
    async with client:
        yield client


@pytest.fixture
def server(redis_server_binary: str) -> Iterator[RedisServer]:
    """A throwaway Redis of this test alone, persistent so that a stop and restart keeps its data."""
    s = RedisServer(redis_server_binary, persistent=True).start()
    yield s
    s.stop()
