"""Start and stop a local ``redis-server`` (the embedded default's serving Redis, scratch servers for
dump builds, and the test suite's real Redis). Core: no Airflow, Beam or web imports."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class RedisUnavailable(RuntimeError):
    pass


def redis_server_binary() -> str:
    path = shutil.which("redis-server")
    if not path:
        raise RedisUnavailable("redis-server not found: run `make setup` (installs it from Debian) "
                               "or `apt-get install redis-server redis-tools`")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ping(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _parent_death_prefix() -> list[str]:
    """The command prefix that makes the kernel SIGKILL the server when this process ends (Linux's
    ``PR_SET_PDEATHSIG``, set by util-linux ``setpriv`` before it execs the server, so nothing runs in the
    forked child of this possibly multi-threaded process); empty where ``setpriv`` is missing."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


@dataclass
class LocalRedis:
    port: int
    dir: Path
    process: subprocess.Popen | None = None
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pidfile(self) -> Path:
        return self.dir / f"redis-{self.port}.pid"

    def start(self, *, dbfilename: str = "dump.rdb", persist: bool = False, wait: float = 10.0,
              daemonize: bool = False, die_with_parent: bool = False) -> LocalRedis:
        """Start redis-server on ``port`` with its data in ``dir``. ``daemonize`` leaves it running after we exit.

        ``die_with_parent``: the kernel kills the server when this process ends, however it ends (Linux's
        parent-death signal, through ``setpriv``; where that is missing the server is started without it): a
        scratch server of a job killed with SIGKILL does not outlive it. Start it from the thread that lives as
        long as the server is needed (the signal follows the starting thread)."""
        if die_with_parent and daemonize:
            raise ValueError("die_with_parent and daemonize exclude each other")
        if ping(self.host, self.port):
            raise RedisUnavailable(f"port {self.port} already has a Redis listening")
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [redis_server_binary(), "--port", str(self.port), "--bind", self.host, "--dir", str(self.dir),
                "--dbfilename", dbfilename, "--appendonly", "no", "--protected-mode", "yes",
                "--pidfile", str(self.pidfile), "--logfile", str(self.dir / f"redis-{self.port}.log"),
                "--save", "" if not persist else "3600 1"]
        if daemonize:
            args += ["--daemonize", "yes"]
        if die_with_parent:
            args = _parent_death_prefix() + args
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if ping(self.host, self.port):
                return self
            if not daemonize and self.process.poll() is not None:
                break
            time.sleep(0.02)
        log = self.dir / f"redis-{self.port}.log"
        tail = log.read_text()[-500:] if log.exists() else ""
        raise RedisUnavailable(f"redis-server did not start on port {self.port}: {tail}")

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the server this object started, or whose pidfile is in ``dir``. True when it stopped; False
        when no pid is known (a server started from another folder, or by hand, is never touched) or when it
        still answers after ``timeout``."""
        pid = None
        if self.process is not None and self.process.poll() is None:
            pid = self.process.pid
        elif self.pidfile.exists():
            with contextlib.suppress(ValueError):
                pid = int(self.pidfile.read_text().strip())
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and ping(self.host, self.port, timeout=0.1):
            time.sleep(0.05)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        return not ping(self.host, self.port, timeout=0.1)


def port_owner(port: int) -> str:
    """Who listens on ``port`` (pid and command line when this user may see it), for error messages."""
    try:
        import psutil

        for conn in psutil.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                with contextlib.suppress(psutil.Error):
                    # redis-server pads its process title with spaces: the words only
                    cmd = " ".join(" ".join(psutil.Process(conn.pid).cmdline()).split())[:120]
                    return f"pid {conn.pid} ({cmd})"
                return f"pid {conn.pid}"
    except Exception:  # noqa: BLE001 - best effort: the message still names the port
        pass
    return "another process"


@contextlib.contextmanager
def temporary_redis(dir: Path, port: int | None = None, **start_kwargs) -> Iterator[LocalRedis]:
    server = LocalRedis(port=port or free_port(), dir=dir)
    server.start(**start_kwargs)
    try:
        yield server
    finally:
        server.stop()
