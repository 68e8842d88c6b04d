"""The heavy steps, as entry points that run outside the Airflow worker: ``skyrec job NAME [options]``.

A job is a function of (config, committed inputs) -> committed outputs. Job ``NAME`` (kebab or snake
case) is the function ``run(ctx: JobContext) -> dict`` in module ``skyrec.jobs.<name_in_snake_case>``.
Its returned dict is the job's summary; by convention it holds ``outputs``: the lake-relative folders
it committed (or found committed already).

The process writes its own record so that whoever launched it can reattach after dying:
``--heartbeat-file`` is touched every few seconds while the job runs; ``--result-file`` receives
``{"status": "success"|"failed", "summary"|"error", ...}`` when it ends (written create-only).
Exit codes: 0 success, 1 error, 3 gate failed, 4 bad input / config error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib
import json
import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from skyrec.config import Config, ConfigError, load_config
from skyrec.gates import GateFailed, GateResult, UnknownGate, check_overrides, enforce
from skyrec.pipelines import BEAM_OPTIONS_ENV
from skyrec.storage import AlreadyCommitted, CorruptPointer, Lake, Manifest, Producer, Stage

EXIT_OK, EXIT_ERROR, EXIT_GATE, EXIT_BAD_INPUT = 0, 1, 3, 4


class BadInput(ValueError):
    """Input that cannot be processed at all (empty dataset, malformed data, ...): retrying cannot help."""


class NotReady(RuntimeError):
    """An upstream output this job needs is not committed yet. Retryable: under the scheduler, DAGs start in
    any order (the hourly ingest may run before the first catalogue is built), so a later attempt succeeds."""


def _parse_ts(value: str | None) -> dt.datetime | None:
    if value is None or value == "":
        return None
    ts = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)


def job_key(dag_id: str, run_id: str, task_id: str) -> str:
    """Stable across attempts; unique per (dag, run, task). Readable prefix + hash, safe as a label value."""
    digest = hashlib.sha256(f"{dag_id}\x00{run_id}\x00{task_id}".encode()).hexdigest()[:16]
    readable = re.sub(r"[^a-z0-9-]+", "-", f"{task_id}".lower()).strip("-")[:40]
    return f"{readable}-{digest}"


@dataclass(frozen=True)
class RunInfo:
    dag_id: str = "manual"
    run_id: str = "manual"
    task_id: str = "manual"
    try_number: int = 1
    logical_date: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC).replace(microsecond=0))
    interval_start: dt.datetime | None = None
    interval_end: dt.datetime | None = None

    @property
    def start(self) -> dt.datetime:
        return self.interval_start or self.logical_date

    @property
    def end(self) -> dt.datetime:
        return self.interval_end or self.logical_date

    @property
    def run_key(self) -> str:
        """The run's identity in output paths, model versions and publication ids: ``YYYYMMDDTHHMMSS``, with
        ``.ffffff`` (microseconds) when the logical time has them. Scheduled runs fall on whole seconds and keep
        the short form; asset-triggered and manual runs are dated by when they were queued, and two of them can
        fall in one second (a snapshot committed twice in a second): each keeps its own outputs, so the later
        run reads its own newer input instead of finding the earlier run's outputs "already committed".
        Lexical order is time order."""
        ts = self.logical_date.astimezone(dt.UTC)
        key = ts.strftime("%Y%m%dT%H%M%S")
        return f"{key}.{ts.microsecond:06d}" if ts.microsecond else key

    @property
    def interval_key(self) -> str:
        return self.start.astimezone(dt.UTC).strftime("%Y%m%dT%H")

    @property
    def job_key(self) -> str:
        return job_key(self.dag_id, self.run_id, self.task_id)

    def producer(self) -> Producer:
        return Producer(dag_id=self.dag_id, run_id=self.run_id, task_id=self.task_id,
                        try_number=self.try_number, job_key=self.job_key)

    def to_args(self) -> list[str]:
        args = ["--dag-id", self.dag_id, "--run-id", self.run_id, "--task-id", self.task_id,
                "--try-number", str(self.try_number), "--logical-date", self.logical_date.isoformat()]
        if self.interval_start:
            args += ["--interval-start", self.interval_start.isoformat()]
        if self.interval_end:
            args += ["--interval-end", self.interval_end.isoformat()]
        return args

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in d.items()}


@dataclass
class JobContext:
    config: Config
    lake: Lake
    run: RunInfo
    params: dict[str, str] = field(default_factory=dict)
    force: bool = False
    overrides: frozenset[str] = frozenset()
    gate_results: list[GateResult] = field(default_factory=list)

    @property
    def producer(self) -> Producer:
        return self.run.producer()

    def path(self, dataset: str, **fields: str) -> str:
        """Lake-relative folder of this run's output of ``dataset`` (run_key / interval_key filled in)."""
        fields.setdefault("run_key", self.run.run_key)
        fields.setdefault("interval_key", self.run.interval_key)
        template_fields = set(re.findall(r"{(\w+)}", self.config.datasets.get(dataset, "")))
        return self.config.dataset_path(dataset, **{k: v for k, v in fields.items() if k in template_fields})

    def stage(self, dataset: str, rel: str | None = None, **fields: str) -> Stage:
        """Staging for this run's output; raises AlreadyCommitted if committed and not forced."""
        rel = rel or self.path(dataset, **fields)
        return self.lake.stage(dataset, rel, self.producer, force=self.force)

    def committed(self, dataset: str, **fields: str) -> Manifest | None:
        """This run's output if committed already (and not forced): the job should then be a no-op."""
        if self.force:
            return None
        return self.lake.manifest(self.path(dataset, **fields))

    def as_of(self, dataset: str, *, or_newest: bool = False) -> Manifest | None:
        """The newest committed output of ``dataset`` whose time key (``name=<time>``) is not after this run's
        logical time: a re-run of an old run, a backfill, or a second data set in the same lake (a user's own
        files dated years before the sample data) reads the inputs of its own time, never a later run's.
        ``or_newest``: when no output is that old, the newest (the history before a lake's first snapshot)."""
        run_key = self.run.run_key
        history = self.lake.history(self.config, dataset)
        for manifest in reversed(history):
            value = manifest.key.partition("=")[2] or manifest.key
            if value <= run_key[: len(value)]:
                return manifest
        return history[-1] if or_newest and history else None

    def gate(self, result: GateResult) -> GateResult:
        """Enforce a gate (honouring one-run overrides) and record it for the manifest."""
        self.gate_results.append(result)
        return enforce(result, self.overrides)

    def checkpoint_dir(self) -> Path:
        """Local scratch for resumable progress, keyed by the job key (stable across attempts)."""
        p = Path(self.config.state_dir) / "checkpoints" / self.run.job_key
        p.mkdir(parents=True, exist_ok=True)
        return p

    def param(self, name: str, default: str | None = None) -> str:
        if name in self.params:
            return self.params[name]
        if default is None:
            raise BadInput(f"job parameter {name!r} is required (pass --param {name}=...)")
        return default


def module_for(name: str) -> str:
    snake = name.replace("-", "_")
    if not re.match(r"^[a-z][a-z0-9_]*$", snake):
        raise ConfigError(f"job name {name!r} is not valid")
    return f"skyrec.jobs.{snake}"


def resolve(name: str) -> Any:
    mod_name = module_for(name)
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        if exc.name == mod_name:
            raise ConfigError(f"unknown job {name!r} (no module {mod_name})") from None
        raise
    fn = getattr(module, "run", None)
    if fn is None:
        raise ConfigError(f"job module {mod_name} has no run(ctx) function")
    return fn


class _Heartbeat(threading.Thread):
    def __init__(self, path: Path, every: float) -> None:
        super().__init__(daemon=True, name="skyrec-heartbeat")
        self.path, self.every = path, every
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.path.write_text(f"{time.time():.3f} {os.getpid()}\n")
            except OSError:
                pass
            self.stop.wait(self.every)


def _write_result(path: Path | None, payload: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp.{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True, default=str))
    try:
        os.link(tmp, path)  # create-only: a result is never overwritten by a later process
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def execute(name: str, *, config: Config | None = None, env: str | None = None, run: RunInfo | None = None,
            params: dict[str, str] | None = None, force: bool = False, overrides: tuple[str, ...] = (),
            heartbeat_file: str | None = None, result_file: str | None = None) -> tuple[int, dict[str, Any]]:
    """Run job ``name`` in this process. Returns (exit code, result payload). Never raises."""
    started = time.time()
    hb: _Heartbeat | None = None
    result_path = Path(result_file) if result_file else None
    payload: dict[str, Any] = {"job": name, "pid": os.getpid(), "started": started}
    code = EXIT_OK
    try:
        cfg = config or load_config(env)
        run = run or RunInfo()
        payload["run"] = run.as_dict()
        payload["job_key"] = run.job_key
        if heartbeat_file:
            hb = _Heartbeat(Path(heartbeat_file), cfg.jobs.heartbeat_seconds)
            hb.start()
        fn = resolve(name)
        ctx = JobContext(config=cfg, lake=Lake.from_config(cfg), run=run, params=dict(params or {}),
                         force=force, overrides=frozenset(overrides))
        summary = fn(ctx) or {}
        summary.setdefault("gates", [g.as_dict() for g in ctx.gate_results])
        payload.update(status="success", summary=summary)
    except GateFailed as exc:
        code = EXIT_GATE
        payload.update(status="failed", error=str(exc), error_kind="gate", gate=exc.gate, details=exc.details)
    except AlreadyCommitted as exc:  # lost a commit race: the winner's output stands, which is success
        payload.update(status="success", summary={"outputs": [exc.path], "note": "committed by another attempt"})
    except NotReady as exc:
        code = EXIT_ERROR  # retried by the task's retries
        payload.update(status="failed", error=f"not ready: {exc}", error_kind="not_ready")
    except (ConfigError, BadInput, FileNotFoundError, CorruptPointer) as exc:
        code = EXIT_BAD_INPUT
        payload.update(status="failed", error=str(exc), error_kind=type(exc).__name__)
    except Exception as exc:  # noqa: BLE001 - the job boundary: record and report every failure
        code = EXIT_ERROR
        payload.update(status="failed", error=f"{type(exc).__name__}: {exc}", error_kind="error",
                       traceback=traceback.format_exc())
    finally:
        if hb is not None:
            hb.stop.set()
    payload["exit_code"] = code
    payload["finished"] = time.time()
    payload["duration_seconds"] = round(payload["finished"] - started, 3)
    _write_result(result_path, payload)
    return code, payload


def main(argv: list[str] | None = None,
         after: Callable[[argparse.Namespace, int, dict[str, Any]], None] | None = None) -> int:
    """``python -m skyrec.jobs.base NAME ...``: the process entry point (also used by ``skyrec job``, which
    passes ``after``: called with the parsed arguments, the exit code and the job's payload once it ran)."""

    ap = argparse.ArgumentParser(prog="skyrec job", description="Run one heavy step as its own process.",
                                 allow_abbrev=False)
    ap.add_argument("name")
    ap.add_argument("--env", default=None)
    ap.add_argument("--dag-id", default="manual")
    ap.add_argument("--run-id", default="manual")
    ap.add_argument("--task-id", default=None)
    ap.add_argument("--try-number", type=int, default=1)
    ap.add_argument("--logical-date", default=None)
    ap.add_argument("--interval-start", default=None)
    ap.add_argument("--interval-end", default=None)
    ap.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--override", action="append", default=[], metavar="GATE")
    ap.add_argument("--heartbeat-file", default=None)
    ap.add_argument("--result-file", default=None)
    args, beam_args = ap.parse_known_args(argv)
    if beam_args:
        # A Beam launcher (BeamHook) appends ``--runner=... --key=value`` pipeline options after the job's
        # arguments: the job's Beam pipelines run with them (``skyrec.pipelines.launcher_options``).
        # Anything else unknown is still an error.
        stray = [a for a in beam_args if not a.startswith("--")]
        if stray or not any(a.startswith("--runner=") for a in beam_args):
            ap.error(f"unrecognized arguments: {' '.join(beam_args)}")
        os.environ[BEAM_OPTIONS_ENV] = json.dumps(beam_args)
    try:
        check_overrides(args.override)
    except UnknownGate as exc:  # before anything runs: a typo must not run the job without its override
        print(f"skyrec job: {exc}", file=sys.stderr)
        return 2
    params = {}
    for p in args.param:
        k, sep, v = p.partition("=")
        if not sep:
            print(f"skyrec job: --param {p!r} must be KEY=VALUE", file=sys.stderr)
            return EXIT_BAD_INPUT
        params[k] = v
    try:
        logical = _parse_ts(args.logical_date) or dt.datetime.now(dt.UTC).replace(microsecond=0)
        run = RunInfo(dag_id=args.dag_id, run_id=args.run_id, task_id=args.task_id or args.name.replace("-", "_"),
                      try_number=args.try_number, logical_date=logical,
                      interval_start=_parse_ts(args.interval_start), interval_end=_parse_ts(args.interval_end))
    except ValueError as exc:
        print(f"skyrec job: bad date: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    code, payload = execute(args.name, env=args.env, run=run, params=params, force=args.force,
                            overrides=tuple(args.override), heartbeat_file=args.heartbeat_file,
                            result_file=args.result_file)
    if code == EXIT_OK:
        print(json.dumps(payload.get("summary", {}), default=str, sort_keys=True))
    else:
        print(f"skyrec job {args.name}: {payload.get('error')}", file=sys.stderr)
        if payload.get("traceback") and os.environ.get("SKYREC_DEBUG"):
            print(payload["traceback"], file=sys.stderr)
    if after is not None:
        after(args, code, payload)
    return code


if __name__ == "__main__":
    # Run as ``python -m skyrec.jobs.base``, this file is ``__main__``, and its exception classes are not the
    # ones job modules raise (they import ``skyrec.jobs.base``): dispatch through the imported module, so
    # ``except BadInput`` catches the jobs' BadInput and bad input is not retried.
    from skyrec.jobs.base import main as _main

    sys.exit(_main())
