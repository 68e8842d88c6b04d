"""This process's resource figures, as the benchmarks and the self-test job report them."""

from __future__ import annotations

import resource
from pathlib import Path


def vm_hwm_kb(pid: int | str = "self") -> int | None:
    """Peak resident memory in kB of process ``pid`` (``VmHWM`` of its ``/proc/<pid>/status``); None when
    it cannot be read (gone, or no ``/proc``)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_mb() -> float:
    """This process's own peak resident memory in MB: ``VmHWM`` of ``/proc/self/status``.

    Not ``ru_maxrss``: Linux keeps that across ``exec``, so a process started by ``multiprocessing``'s spawn
    (fork, then exec) reports at least its launcher's resident size at the fork -- a small job launched from
    a benchmark holding a large data set would report the benchmark's memory. ``ru_maxrss`` where there is
    no ``/proc``."""
    kb = vm_hwm_kb()
    if kb is None:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / 1024, 1)
