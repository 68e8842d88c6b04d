"""``python -m skyrec.chaos [--runs N] [--min-faults F] [--seed S] [--faults-per-run K] [--kinds a,b] [--report PATH]``.

Runs the randomized fault run and prints its summary; exit 1 when an invariant was violated.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from skyrec.chaos.harness import KINDS, run_chaos, summary_text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m skyrec.chaos", description=__doc__)
    ap.add_argument("--runs", type=int, default=50, help="runs of the chain, at most (default 50)")
    ap.add_argument("--min-faults", type=int, default=0,
                    help="stop after the run in which this many faults have been injected (default 0: all runs)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the fault plan (default 1)")
    ap.add_argument("--faults-per-run", type=int, default=6, help="faults planned per run (default 6, at most 8)")
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"fault kinds to use (default: all: {','.join(KINDS)})")
    ap.add_argument("--root", type=Path, default=None, help="working folder (default: a new temporary folder)")
    ap.add_argument("--report", type=Path, default=None, help="write the full JSON report here")
    args = ap.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        ap.error(f"--kinds: unknown kind(s) {unknown}; known: {', '.join(KINDS)}")
    if not 1 <= args.faults_per_run <= 8:
        ap.error("--faults-per-run must be between 1 and 8 (one per task of the chain)")
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    report = run_chaos(seed=args.seed, runs=args.runs, faults_per_run=args.faults_per_run, root=args.root,
                       kinds=kinds, report_path=args.report, min_faults=args.min_faults)
    print(summary_text(report))
    print(f"working folder: {report['root']}" + (f"; report: {args.report}" if args.report else ""))
    if args.report is None:
        print(json.dumps({k: report[k] for k in ("runs", "faults_injected", "violations")}))
    return 1 if report["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
