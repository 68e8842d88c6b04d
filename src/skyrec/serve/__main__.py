"""``python -m skyrec.serve [--env local] [--host H] [--port P] [--workers N]``: the API without the CLI's imports (used by
the benchmark and the integration tests to start a real uvicorn process)."""

from __future__ import annotations

import argparse

from skyrec.config import load_config
from skyrec.serve.main import run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m skyrec.serve", description=__doc__)
    parser.add_argument("--env", default=None, help="config environment (default: SKYREC_ENV or local)")
    parser.add_argument("--host", default=None, help="bind address (default: serve.host)")
    parser.add_argument("--port", type=int, default=None, help="port (default: serve.port)")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: serve.workers); each shares nothing but Redis")
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be at least 1 (got {args.workers})")
    config = load_config(args.env)
    run(config, host=args.host, port=args.port, workers=args.workers)


if __name__ == "__main__":
    main()
