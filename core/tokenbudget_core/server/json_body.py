"""How a request body is read as JSON: every way it can fail to parse is one JSON error.

FastAPI turns a :class:`json.JSONDecodeError` into a ``422`` (``json_invalid``) but any other
failure of ``json.loads`` (bytes that are not UTF-8, nesting deeper than the parser goes, an integer
longer than Python converts: ``sys.get_int_max_str_digits()``) into a bare ``400``.
:class:`JSONBodyRoute` gives the endpoints a request whose ``json()`` raises those as
:class:`json.JSONDecodeError` too, with the position where parsing stopped, so
:func:`~tokenbudget_core.server.error_responses.validation_body` answers all of them the same way
(``field`` ``body``, the reason, line and column, the fix).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

__all__ = ["JSONBodyRequest", "JSONBodyRoute", "parse_json"]


def _deepest(doc: str) -> int:
    """The offset of the first bracket at the deepest nesting of ``doc`` (strings skipped)."""
    depth = deepest = at = 0
    in_string = escaped = False
    for i, c in enumerate(doc):
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            if depth > deepest:
                deepest, at = depth, i
        elif c in "]}":
            depth -= 1
    return at


_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|-?\d+')
"""A JSON string (skipped) or the integer part of a number."""


def _long_integer(doc: str, limit: int) -> int:
    """The offset of the first integer of ``doc`` with more than ``limit`` digits (strings
    skipped), else 0."""
    for m in _TOKENS.finditer(doc):
        digits = m.group().removeprefix("-")
        if digits.isdigit() and len(digits) > limit:
            return m.start()
    return 0


def parse_json(body: bytes) -> Any:
    """``json.loads(body)``, raising :class:`json.JSONDecodeError` for every way it can fail.

    Raises:
        json.JSONDecodeError: Malformed JSON, bytes that are not valid in the body's encoding
            (UTF-8, or UTF-16/32 as ``json.loads`` detects them), nesting too deep to parse, or an
            integer with more digits than Python converts (``sys.get_int_max_str_digits()``, 4300
            by default).
    """
    try:
        parsed = json.loads(body)
    except UnicodeDecodeError as e:
        encoding = "UTF-8" if e.encoding.replace("_", "-").lower().startswith("utf-8") else e.encoding
        doc = body.decode(e.encoding, "replace")
        pos = len(body[: e.start].decode(e.encoding, "replace"))
        raise json.JSONDecodeError(f"invalid {encoding} byte 0x{body[e.start]:02x}", doc, pos) from e
    except RecursionError as e:
        doc = body.decode("utf-8", "replace")
        raise json.JSONDecodeError("nested too deeply", doc, _deepest(doc)) from e
    except ValueError as e:  # int(): "Exceeds the limit (4300 digits) for integer string conversion"
        if isinstance(e, json.JSONDecodeError):
            raise
        doc = body.decode(json.detect_encoding(body), "replace")
        limit = sys.get_int_max_str_digits()
        raise json.JSONDecodeError(
            f"an integer of more than {limit} digits", doc, _long_integer(doc, limit)
        ) from e
    _refuse_lone_surrogates(body, parsed)
    return parsed


_LONE_SURROGATE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)
"""A ``\\uD800``-``\\uDFFF`` escape that is not half of a pair: valid JSON, yet no text (a reply
echoing it cannot be written as UTF-8)."""


def _refuse_lone_surrogates(body: bytes, parsed: Any) -> None:
    """Raise :class:`json.JSONDecodeError` at the first lone surrogate escape of ``body``.

    Only a body with a candidate escape (or not in UTF-8) is re-encoded to check: an escaped
    backslash before ``ud800`` is text, not an escape.
    """
    candidate = _LONE_SURROGATE.search(body)
    utf8 = json.detect_encoding(body) == "utf-8"
    if utf8 and candidate is None:
        return
    try:
        json.dumps(parsed, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        doc = body.decode(json.detect_encoding(body), "replace")
        pos = len(body[: candidate.start()].decode("utf-8", "replace")) if candidate and utf8 else 0
        raise json.JSONDecodeError(
            "a lone UTF-16 surrogate escape (\\ud800-\\udfff not in a pair), which is no text",
            doc,
            pos,
        ) from None


class JSONBodyRequest(Request):
    """A request whose :meth:`json` fails only with :class:`json.JSONDecodeError`."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


class JSONBodyRoute(APIRoute):
    """An :class:`~fastapi.routing.APIRoute` whose endpoints read the body with :class:`JSONBodyRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            return await handler(JSONBodyRequest(request.scope, request.receive))

        return handle
