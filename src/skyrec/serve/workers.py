"""``serve.workers`` > 1: N uvicorn processes, each with its own listening socket on the same port.

Why not uvicorn's own ``workers=N``: its workers share one listening socket, and whichever worker wakes first
accepts a burst of new connections. With keep-alive clients (a load balancer, ``wrk``) one worker ended up
holding 10, 14 and then all 16 of 16 connections in three tries on the reference machine, so the second core
sat idle. Here every worker binds its own socket with ``SO_REUSEPORT``, and the kernel spreads new
connections over the sockets by a hash of their addresses: each worker gets its share, and shares nothing
with the others but Redis (its own caches, its own Redis connections).

The supervisor (this process) refuses a port something else already holds (``SO_REUSEPORT`` would otherwise
let a second server of the same user silently share it), forwards SIGTERM/SIGINT to the workers (each drains
its requests for ``serve.graceful_shutdown_seconds`` and runs its shutdown), restarts a worker that dies
after its server started, and stops everything when a worker exits before its server started (it cannot
start). A worker stops when the supervisor dies (Linux parent-death signal).

Metrics: every start gets a fresh directory for ``prometheus_client``'s multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, set before the workers start, removed when the server stops): each worker
writes its metric values there and ``/metrics`` adds up all workers' values, whichever worker answers. The
values of a worker that died stay in the sums (counters never go back).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from typing import Any

log = logging.getLogger("skyrec.serve")

APP = "skyrec.serve.main:app_from_environment"


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def port_is_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound by a socket *without* ``SO_REUSEPORT`` (so nothing holds it)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers do not count
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def listening_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _worker(options: dict[str, Any], ready: Any) -> None:
    """One worker process: its own socket in the port's ``SO_REUSEPORT`` group, one uvicorn server; ``ready``
    is set once the server has started (the app's startup ran and the socket is served)."""
    import threading

    import uvicorn

    _die_with_parent()
    options = dict(options)
    host, port, app = options.pop("host"), options.pop("port"), options.pop("app", APP)
    sock = listening_socket(host, port)
    config = uvicorn.Config(app, factory=True, host=host, port=port, **options)
    server = uvicorn.Server(config)

    def report_ready() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if server.started:
            ready.set()

    threading.Thread(target=report_ready, daemon=True).start()
    server.run(sockets=[sock])


def supports_reuse_port() -> bool:
    return hasattr(socket, "SO_REUSEPORT")


def serve(workers: int, options: dict[str, Any]) -> int:
    """Run ``workers`` processes of ``uvicorn.Server(APP, **options)`` on ``options['host']:options['port']``
    until SIGTERM/SIGINT; returns the exit status (0 after a requested stop). ``options['app']`` names another
    app factory (tests)."""
    import logging.config

    logging.config.dictConfig(options["log_config"])
    host, port = options["host"], options["port"]
    if not port_is_free(host, port):
        log.error("address in use", extra={"host": host, "port": port})
        print(f"skyrec serve: {host}:{port} is already in use", file=sys.stderr)
        return 1
    ctx = multiprocessing.get_context("spawn")
    stopping: list[int] = []
    metrics_dir = tempfile.mkdtemp(prefix="skyrec-metrics-")
    previous_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # inherited by the workers (spawned: fresh imports)

    def start() -> tuple[Any, Any]:
        ready = ctx.Event()
        proc = ctx.Process(target=_worker, args=(options, ready), name="skyrec-serve-worker", daemon=False)
        proc.start()
        return proc, ready

    def on_signal(signum: int, frame: Any) -> None:
        stopping.append(signum)
        for proc, _ in procs:
            if proc.is_alive() and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)

    procs: list[tuple[Any, Any]] = []
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    status = 0
    try:
        procs.extend(start() for _ in range(workers))
        log.info("workers started", extra={"workers": workers, "pids": [p.pid for p, _ in procs],
                                           "host": host, "port": port})
        announced: set[int] = set()
        while not stopping:
            time.sleep(0.2)
            for i, (proc, ready) in enumerate(procs):
                if ready.is_set() and proc.pid not in announced:  # from here on, its exit is a restart
                    announced.add(proc.pid)
                    log.info("worker ready", extra={"pid": proc.pid})
                if proc.is_alive() or stopping:
                    continue
                if not ready.is_set():
                    log.error("worker failed to start; stopping", extra={"pid": proc.pid, "exitcode": proc.exitcode})
                    status = 1
                    on_signal(signal.SIGTERM, None)
                    break
                log.warning("worker exited; restarting", extra={"pid": proc.pid, "exitcode": proc.exitcode})
                _mark_dead(metrics_dir, proc.pid)
                procs[i] = start()
        grace = float(options.get("timeout_graceful_shutdown") or 10) + 5
        deadline = time.monotonic() + grace
        for proc, _ in procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                log.warning("worker did not stop in time; killing", extra={"pid": proc.pid})
                proc.kill()
                proc.join(5)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if previous_dir is None:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        else:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = previous_dir
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return status


def _mark_dead(metrics_dir: str, pid: int | None) -> None:
    """Drop a dead worker's live gauges from the sums (its counters and histograms stay)."""
    if pid is None:
        return
    with contextlib.suppress(OSError):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, metrics_dir)
