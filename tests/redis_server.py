"""A real `redis-server` for the tests: started on a free 127.0.0.1 port, in a temporary folder, with no
persistence (``--save '' --appendonly no``), and killed at the end. Never a shared or preinstalled server.

`scripts/test` installs redis-server (apt-get) when it is not on PATH. Without it the tests that need
Redis fail with a message saying how to install it, rather than skip silently (a skip would pass CI
without ever testing the Redis store); ``AUGURY_SKIP_REDIS=1`` skips them on purpose, visibly.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from system_tools import system_tool

#: how long a start waits for the server to accept connections.
START_S = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def redis_server_binary() -> str:
    """The redis-server on PATH (`system_tool`: fails the test, or skips it with AUGURY_SKIP_REDIS=1)."""
    return system_tool("redis-server", needed_by="the Redis store's tests", package="redis-server",
                       skip_env="AUGURY_SKIP_REDIS")


class RedisServer:
    """One redis-server process on 127.0.0.1:`port`; `stop` and `start` again keep the port (a restart)."""

    def __init__(self, binary: str, port: int | None = None, extra: tuple[str, ...] = ()) -> None:
        self.binary = binary
        self.port = port or free_port()
        self.extra = extra
        self.dir = Path(tempfile.mkdtemp(prefix="augury-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def socket(self) -> Path:
        """The server's unix socket (it listens there too)."""
        return self.dir / "redis.sock"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                "no", "--dir", str(self.dir), "--protected-mode", "yes", "--loglevel", "warning",
                "--unixsocket", str(self.socket), "--unixsocketperm", "700", *self.extra]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {err}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {START_S:g} s")

    def stop(self) -> None:
        """Kill the server (as a crash would: nothing is saved)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.kill()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()

    def flush(self) -> None:
        """Empty every database (between tests that share the server)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"FLUSHALL\r\n")
            assert s.recv(16).startswith(b"+OK")

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
