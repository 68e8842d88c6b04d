"""The command line of a benchmark script run on its own: ``python benchmarks/bench_<name>.py [scale]``.

``skyrec bench`` imports the scripts and calls ``main(scale)``; run by hand, a script reads its scale here, so
``--help`` prints the script's doc and an unknown scale is refused with the known ones (exit 2), instead of a
traceback or a run at the wrong size.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable


def scale_argument(doc: str | None, scales: Iterable[str], default: str = "small") -> str:
    """The scale given on the command line (``default`` when none), one of ``scales``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scale", nargs="?", default=default, choices=sorted(scales),
                        help=f"the benchmark's size (default {default})")
    return str(parser.parse_args().scale)
