"""What a request must pass before any endpoint sees it: the Host it names, the bearer token and
the body size limit.

:class:`RequestGuard` is plain ASGI middleware:

* **Host (no token only).** Without a token, a request that arrived on a loopback socket (the
  service listens on ``127.0.0.1``, or on every interface and was reached through ``127.0.0.1``)
  must name a loopback ``Host`` (``localhost``, ``127.0.0.0/8``, ``[::1]``, any port) or one of
  the ``allowed_hosts``; any other is answered ``421``. Without it any web page the operator opens
  could rebind its own name to ``127.0.0.1`` (DNS rebinding) and, same-origin then, record spend,
  use up budgets and read the reports. The socket's address (ASGI ``scope["server"]``) is the
  server's own, never the client's word; a request reached through another interface is a
  network client's, which a service without a token already answers (``allow_no_auth``).

* **Auth.** When a token is configured, every path except the public ones (health, the
  OpenAPI schema and docs, the dashboard's page and static files: they hold no data; with or
  without a trailing slash, which the router redirects to the path itself) needs
  ``Authorization: Bearer <token>``, compared in constant time. Otherwise ``401`` with
  ``WWW-Authenticate: Bearer``. Paths are matched as the router matches them (:func:`route_path`:
  less the ``root_path`` the app is mounted at), so the app works mounted under a prefix.
* **Size.** A request whose ``Content-Length`` exceeds the limit is answered ``413`` before its
  body is read; a body sent without a length (chunked) is read up to the limit and answered
  ``413`` as soon as it goes past it. Nothing is parsed before the check, and the endpoint
  receives the buffered body.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import socket
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from starlette._utils import get_route_path  # the router's own: the guard must see what it routes

from tokenbudget_core.errors import InvalidInputError

from .error_responses import error_body

__all__ = ["ANY_HOST", "PUBLIC_PATHS", "RequestGuard", "host_allowed", "is_loopback", "route_path"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PUBLIC_PATHS = frozenset(
    {"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/dashboard"}
)
"""Paths served without the token (no ledger data in them)."""
PUBLIC_PREFIXES = ("/dashboard/static/",)
ANY_HOST = "*"
"""In ``allowed_hosts``: answer any ``Host`` (a proxy in front authenticates and forwards its own)."""


def route_path(scope: Scope) -> str:
    """The request's path as the app's router matches it: ``scope["path"]`` less the
    ``root_path`` the app is mounted at (``/tb/health`` is ``/health`` for an app mounted at
    ``/tb``, or run with ``--root-path /tb``). Starlette's own function, so the guard and the
    metrics can never judge a path other than the one the router serves.

    Example:
        >>> route_path({"path": "/tb/health", "root_path": "/tb"}), route_path({"path": "/health"})
        ('/health', '/health')
    """
    return get_route_path(scope)


def is_loopback(host: str) -> bool:
    """Whether a server listening on ``host`` is reachable from this machine only: a loopback
    address (``127.0.0.0/8``, ``::1``) or a name that resolves to loopback addresses only
    (``localhost``). Anything else, an empty host (every interface) or a name that does not
    resolve included, is not.

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("0.0.0.0")
        (True, True, False)
    """
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    if not host:
        return False
    try:
        found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    addresses = {str(info[4][0]).split("%")[0] for info in found}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def _host_name(host: str) -> str:
    """The name or address of a ``Host`` header's value: lower case, without its port, brackets
    (``[::1]:8000`` is ``::1``) or a trailing dot (``localhost.`` is ``localhost``)."""
    host = host.strip().lower()
    if host.startswith("["):  # an IPv6 literal, with or without a port
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def host_allowed(host: str, allowed: Iterable[str] = ()) -> bool:
    """Whether a request naming ``Host: host`` is addressed to this machine: a loopback address
    (``127.0.0.0/8``, ``::1``), ``localhost``, or one of ``allowed`` (names, any port; ``"*"``:
    any). Names are compared as given, never resolved: a rebinding attacker's name resolves to
    ``127.0.0.1`` too.

    Example:
        >>> host_allowed("127.0.0.1:8000"), host_allowed("[::1]:8000"), host_allowed("localhost")
        (True, True, True)
        >>> host_allowed("rebind.attacker.example:8000"), host_allowed("tb.internal", ["tb.internal"])
        (False, True)
    """
    name = _host_name(host)
    names = {_host_name(a) for a in allowed}
    if ANY_HOST in names or name == "localhost" or name in names:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _on_loopback(scope: Scope) -> bool:
    """Whether the request arrived on a loopback socket: the server's own address (``scope["server"]``,
    the socket's, set by the ASGI server, never by the client), not the ``Host`` it names."""
    server = scope.get("server")
    if not server or not isinstance(server[0], str):
        return False  # a Unix socket (no port) or no address given: no browser reaches it directly
    try:
        return server[1] is not None and ipaddress.ip_address(server[0].strip("[]").split("%")[0]).is_loopback
    except ValueError:
        return False


class RequestGuard:
    """ASGI middleware enforcing the ``Host`` (without a token), the bearer token and the body
    size limit.

    Args:
        app: The application to guard.
        token: The bearer token; ``None`` turns auth off. Surrounding whitespace is stripped
            (a secret read from a file with its trailing newline), as it is from the token a
            client sends.
        max_body_bytes: The largest request body accepted.
        public_paths: Paths that need no token.
        allowed_hosts: Without a token, the ``Host`` names, beyond loopback ones, a request that
            arrived on a loopback socket may name (the name the service was bound to; ``"*"``:
            any, for a proxy in front that authenticates). Any other is answered ``421``, against
            DNS rebinding. Unused with a token (the token is the protection).

    Raises:
        InvalidInputError: ``token`` is empty or blank, ``max_body_bytes`` is not a positive
            integer, or ``allowed_hosts`` not a list of host names.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        max_body_bytes: int,
        public_paths: Iterable[str] = PUBLIC_PATHS,
        allowed_hosts: Iterable[str] = (),
    ) -> None:
        if token is not None and (not isinstance(token, str) or not token.strip()):
            raise InvalidInputError(
                "token", "must be a non-empty string or None", fix="pass None to turn auth off"
            )
        if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int) or max_body_bytes < 1:
            raise InvalidInputError("max_body_bytes", "must be a positive integer", value=max_body_bytes)
        if isinstance(allowed_hosts, str | bytes) or not isinstance(allowed_hosts, Iterable):
            raise InvalidInputError(
                "allowed_hosts",
                "must be a list of host names",
                value=allowed_hosts,
                fix=f"pass [{allowed_hosts!r}]" if isinstance(allowed_hosts, str) else "pass a list",
            )
        hosts = tuple(allowed_hosts)
        for i, h in enumerate(hosts):
            if not isinstance(h, str) or not h.strip():
                raise InvalidInputError(
                    f"allowed_hosts[{i}]",
                    "must be a host name (a non-empty string)",
                    value=h,
                    fix="e.g. 'tb.internal', or '*' for any host",
                )
        self.app = app
        # stripped, as the client's is: a secret read from a file with its newline still matches
        self._token = None if token is None else token.strip().encode()
        self.max_body_bytes = max_body_bytes
        self.public_paths = frozenset(public_paths)
        self.allowed_hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._token is None and _on_loopback(scope) and not self._host_ok(scope):
            await _respond(send, 421, self._wrong_host(scope))
            return
        if self._token is not None and not self._is_public(route_path(scope)) and not self._authorized(scope):
            await _respond(
                send,
                401,
                error_body(
                    "unauthorized", "missing or wrong bearer token: send 'Authorization: Bearer <token>'"
                ),
                [(b"www-authenticate", b'Bearer realm="tokenbudget"')],
            )
            return
        length = _content_length(scope)
        if length is not None and length > self.max_body_bytes:
            await _too_large(send, self.max_body_bytes)
            return
        body = await self._read_body(receive)
        if body is None:
            await _too_large(send, self.max_body_bytes)
            return
        await self.app(scope, _replay(body, receive), send)

    def _host_ok(self, scope: Scope) -> bool:
        host = _header(scope, b"host")
        # no Host at all (HTTP/1.0): not a browser's request, which always names one
        return host is None or host_allowed(host, self.allowed_hosts)

    def _wrong_host(self, scope: Scope) -> dict[str, Any]:
        host = _header(scope, b"host") or ""
        return error_body(
            "misdirected_request",
            f"Host {host!r} is refused: without a token this service answers only requests addressed "
            "to this machine (localhost, 127.0.0.1, [::1]), so a web page cannot reach it by "
            "rebinding its own name to 127.0.0.1",
            field="Host",
            fix="send the request to http://127.0.0.1:<port> (or localhost); to answer other host "
            "names, run the service with a token (--token), or pass them in create_app(allowed_hosts=...)",
            host=host,
        )

    def _is_public(self, path: str) -> bool:
        # A public path with trailing slashes is public too: the router only redirects it to the
        # path itself (as it redirects every route), so both spellings answer the same.
        return (
            path in self.public_paths
            or path.rstrip("/") in self.public_paths
            or path.startswith(PUBLIC_PREFIXES)
        )

    def _authorized(self, scope: Scope) -> bool:
        assert self._token is not None
        for name, value in scope.get("headers", ()):
            if name.lower() == b"authorization":
                scheme, _, given = bytes(value).partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self._token)
        return False

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or ``None`` as soon as it exceeds the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the buffered body once, then waits for the client as usual."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _too_large(send: Send, limit: int) -> None:
    await _respond(
        send,
        413,
        error_body(
            "body_too_large",
            f"the request body exceeds {limit} bytes; send less (e.g. fewer or shorter documents)",
            limit=limit,
        ),
    )


async def _respond(
    send: Send, status: int, body: dict[str, Any], headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
