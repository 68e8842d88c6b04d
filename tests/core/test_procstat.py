"""``skyrec.procstat.peak_rss_mb``: a process's own peak memory, also when it was spawned by a large one."""

from __future__ import annotations

import multiprocessing as mp
import resource

import numpy as np

from skyrec.procstat import peak_rss_mb


def _child(queue) -> None:  # type: ignore[no-untyped-def]
    queue.put((peak_rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def test_a_spawned_process_reports_its_own_peak_not_its_launchers() -> None:
    held = np.ones(400 * 2**20 // 8)  # 400 MB resident in the launcher while it spawns
    assert held.sum() > 0
    assert peak_rss_mb() >= 400
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(target=_child, args=(queue,))
    p.start()
    own, carried = queue.get(timeout=60)
    p.join(60)
    # a bare Python child peaks far below what its launcher held; ru_maxrss carries the launcher's across exec
    assert own < 200, (own, carried)


def test_another_processs_peak_is_read_by_pid_and_none_once_it_is_gone() -> None:
    import subprocess
    import sys

    from skyrec.procstat import vm_hwm_kb

    child = subprocess.Popen([sys.executable, "-c", "b = bytearray(100 * 2**20); import time; time.sleep(30)"])
    try:
        import time

        deadline = time.monotonic() + 20
        while (vm_hwm_kb(child.pid) or 0) < 100 * 1024 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (vm_hwm_kb(child.pid) or 0) >= 100 * 1024
    finally:
        child.kill()
        child.wait()
    assert vm_hwm_kb(child.pid) is None
