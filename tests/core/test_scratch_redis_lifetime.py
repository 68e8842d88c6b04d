"""A scratch redis-server (create_redis_dump's proof server) does not outlive the job that started it, even
when the job is killed with SIGKILL: the kernel's parent-death signal ends it (``LocalRedis.start``'s
``die_with_parent``). Without it the server is left running, holding its port and memory, forever."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from skyrec.redis_local import LocalRedis, free_port, ping

pytestmark = pytest.mark.integration

CHILD = """
import sys, time
from pathlib import Path
from skyrec.redis_local import LocalRedis
server = LocalRedis(port=int(sys.argv[1]), dir=Path(sys.argv[2])).start(die_with_parent=sys.argv[3] == "1")
print(server.process.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie (exited, not yet reaped by init) counts as gone
        return fh.read().split(") ", 1)[1][0] != "Z"


def _start_and_kill(tmp_path, die_with_parent: bool) -> tuple[int, int]:
    port = free_port()
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(port), str(tmp_path / "redis"),
                              "1" if die_with_parent else "0"], stdout=subprocess.PIPE, text=True)
    pid = int(child.stdout.readline())  # type: ignore[union-attr]
    assert ping("127.0.0.1", port)
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    return port, pid


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are Linux's")
def test_a_scratch_server_dies_with_a_job_killed_by_sigkill(tmp_path) -> None:
    port, pid = _start_and_kill(tmp_path, die_with_parent=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (_alive(pid) or ping("127.0.0.1", port, timeout=0.1)):
        time.sleep(0.05)
    assert not _alive(pid) and not ping("127.0.0.1", port), "the scratch redis-server outlived its job"


def test_without_it_the_server_is_left_behind(tmp_path) -> None:
    """The control: the same kill leaves a server started without the signal running (then stopped here)."""
    port, pid = _start_and_kill(tmp_path, die_with_parent=False)
    try:
        time.sleep(0.5)
        assert _alive(pid) and ping("127.0.0.1", port)
    finally:
        LocalRedis(port=port, dir=tmp_path / "redis").stop()


def test_die_with_parent_and_daemonize_exclude_each_other(tmp_path) -> None:
    with pytest.raises(ValueError, match="exclude each other"):
        LocalRedis(port=free_port(), dir=tmp_path).start(die_with_parent=True, daemonize=True)
