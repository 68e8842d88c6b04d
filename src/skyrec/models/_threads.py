"""Thread settings for training on small machines.

implicit and LightFM parallelise over users/items themselves; a BLAS library that also starts its own
thread pool inside each of those threads oversubscribes the cores (implicit warns about exactly this and
recommends ``OPENBLAS_NUM_THREADS=1``). ``single_threaded_blas`` limits BLAS to one thread for the duration
of a fit, without touching the process environment, and ``fit_threads`` picks the model's own threads.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from skyrec.models.params import MAX_THREADS


def fit_threads(requested: int | None = None) -> int:
    """Threads for a model's own parallel loop: the request, else (0 or None) the CPUs this process may use.

    A negative or absurd count is refused here as well as by the models' parameter check
    (``skyrec.models.params.THREADS``): handed to OpenMP, ``-4`` becomes a huge unsigned count and libgomp
    aborts the whole process ("Out of memory allocating ..."), with no job result written."""
    if isinstance(requested, bool) or not (requested is None or isinstance(requested, int)) \
            or not 0 <= (requested or 0) <= MAX_THREADS:
        raise ValueError(f"num_threads must be a whole number in [0, {MAX_THREADS:,}] (0: every CPU this "
                         f"process may use), got {requested!r}")
    if requested:
        return requested
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Limit BLAS/OpenMP pools to one thread while the model parallelises itself."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scipy's stack here
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield
