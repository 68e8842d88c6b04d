"""The fault-run loop: seeded faults injected into the chain, invariants checked after every run.

One *run* is the chain for one hour of activity: ``ingest_activity`` (delta + snapshot) -> ``train_model``
(create_dataset, train, evaluate, publish_model) -> ``precompute_recommendations`` of one variant
(compute_predictions, create_redis_dump, publish_predictions), each task executed by a worker process
(``skyrec.chaos.worker``) through the real operator and the local job backend. A failed attempt is
retried with the next try number, as Airflow does (up to ``max_tries``).

Fault kinds (each planned on the first attempt of a task, ``delay`` seconds after it starts):

``kill_job``          SIGKILL to the job's process group (the job dies; the retry must resume or redo it)
``kill_worker``       SIGKILL to the worker (the job lives on; the retry must reattach or adopt its output)
``storage_write``     the lake's object store answers one write (or a burst of retries) with an error
``storage_commit``    the same on the create-only manifest PUT (the commit)
``lost_response``     the object store applies a write but its answer is lost; the client retries it
``redis_restart``     kill -9 of the serving redis-server, restarted after a short outage
``redis_full``        the serving Redis's maxmemory set just above what it holds, for a few seconds, while the
                      rail publishes (a load refused before it starts, or refused midway with -OOM)
``concurrent``        a second attempt of the same task started at the same moment (a zombie and a retry)

The plan of a run comes from ``random.Random(f"{seed}:{run}")``; timing makes a run's exact interleaving
vary, so a violation is reported with its seed, run, faults and the events that led to it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from skyrec.chaos.invariants import (
    Publication,
    Violation,
    api_violations,
    check_outputs,
    check_records,
    load_publication,
    orphan_processes,
    redis_leftovers,
    verify_all,
)
from skyrec.chaos.poller import ApiPoller
from skyrec.chaos.proxy import Rule
from skyrec.chaos.world import VARIANTS, World
from skyrec.jobs.base import RunInfo

KINDS = ("kill_job", "kill_worker", "storage_write", "storage_commit", "lost_response", "redis_restart",
         "redis_full", "concurrent")
INGEST_DAG = "ingest_user_activity"
TRAIN_DAG = "train_model"
TRAIN_TASKS = ("create_dataset", "train", "evaluate", "publish_model")
PRECOMPUTE_TASKS = ("compute_predictions", "create_redis_dump", "publish_predictions")


@dataclass
class Fault:
    kind: str
    task: int  # index in the run's chain
    delay: float
    params: dict[str, Any] = field(default_factory=dict)
    injected: bool = False
    at: float | None = None
    detail: str = ""

    def brief(self, tasks: list[dict[str, Any]]) -> dict[str, Any]:
        return {"kind": self.kind, "task": tasks[self.task]["task_id"], "delay": round(self.delay, 2),
                "params": self.params, "injected": self.injected, "detail": self.detail}


@dataclass
class RunResult:
    run: int
    hour: str
    variant: str
    completed: bool
    attempts: int
    seconds: float
    faults: list[dict[str, Any]]
    failure: str | None = None
    violations: list[dict[str, Any]] = field(default_factory=list)


def _log(msg: str) -> None:
    print(f"[chaos] {msg}", file=sys.stderr, flush=True)


def chain(hour: dt.datetime, variant: str, model: str) -> list[dict[str, Any]]:
    """The task attempts of one run (try numbers filled in by the loop); ``model``: the rail's."""
    from skyrec.airflow.factory import precompute_dag_id

    key = hour.strftime("%Y%m%dT%H")
    ingest = {"dag_id": INGEST_DAG, "task_id": "ingest_activity", "run_id": f"chaos__{key}",
              "logical_date": hour.isoformat(), "interval_start": hour.isoformat(),
              "interval_end": (hour + dt.timedelta(hours=1)).isoformat()}
    after = (hour + dt.timedelta(hours=1)).isoformat()
    train = [{"dag_id": TRAIN_DAG, "task_id": f"{model}.{t}", "run_id": f"chaos__{key}", "logical_date": after,
              "interval_start": None, "interval_end": None} for t in TRAIN_TASKS]
    pre_dag = precompute_dag_id(model, variant, "v1")
    pre = [{"dag_id": pre_dag, "task_id": t, "run_id": f"chaos__{key}", "logical_date": after,
            "interval_start": None, "interval_end": None} for t in PRECOMPUTE_TASKS]
    return [ingest, *train, *pre]


def run_outputs(config: Any, hour: dt.datetime, variant: str) -> dict[str, str]:
    ik = hour.strftime("%Y%m%dT%H")
    rk = RunInfo(logical_date=hour + dt.timedelta(hours=1)).run_key  # the train/precompute runs' key
    model = config.variants[variant].model
    return {
        "activity_delta": config.dataset_path("activity_delta", interval_key=ik),
        "activity_snapshot": config.dataset_path("activity_snapshot", interval_key=ik),
        "training_dataset": config.dataset_path("training_dataset", run_key=rk,
                                                dataset_id=config.training.dataset_id(model)),
        "model": config.dataset_path("model", run_key=rk, model=model, version="v1"),
        "evaluation": config.dataset_path("evaluation", run_key=rk, model=model, version="v1"),
        "predictions": config.dataset_path("predictions", run_key=rk, variant=variant, version="v1"),
        "redis_dump": config.dataset_path("redis_dump", run_key=rk, variant=variant, version="v1"),
    }


def fault_kinds(seed: int, run: int, per_run: int, kinds: list[str]) -> list[str]:
    """The kinds of run ``run``'s faults: the kinds in a seeded order, dealt round-robin over all runs,
    so every kind is injected about equally often however few runs there are."""
    order = list(kinds)
    random.Random(f"{seed}:kinds").shuffle(order)
    return [order[(run * per_run + j) % len(order)] for j in range(per_run)]


def plan_faults(rng: random.Random, n_tasks: int, kinds: list[str]) -> list[Fault]:
    """One fault per kind in ``kinds``, on distinct tasks (a Redis restart may share a task; a full Redis is
    aimed at the last task, the publication)."""
    faults: list[Fault] = []
    free = list(range(n_tasks))
    rng.shuffle(free)
    for kind in kinds:
        if kind == "redis_full":
            task = n_tasks - 1
        else:
            task = rng.randrange(n_tasks) if kind == "redis_restart" or not free else free.pop()
        params: dict[str, Any] = {}
        if kind in {"storage_write", "storage_commit"}:
            status, code, burst = rng.choice([(500, "InternalError", 5), (403, "AccessDenied", 1),
                                              (503, "SlowDown", 1)])
            params = {"status": status, "code": code, "burst": burst,
                      "skip": 0 if kind == "storage_commit" else rng.randrange(3)}
        elif kind == "lost_response":  # most tasks commit one manifest: aim at it, or at one of the writes
            manifest = rng.random() < 0.6
            params = {"manifest": manifest, "skip": 0 if manifest else rng.randrange(3)}
        elif kind == "redis_restart":
            params = {"down": round(rng.uniform(0.2, 1.5), 2)}
        elif kind == "redis_full":  # room for a few keys: a load refused before it starts, or midway
            at = rng.choice(["time", "registration"])
            params = {"at": at, "room": rng.choice([0, 2_000, 20_000] if at == "time" else [0, 300, 2_000]),
                      "full": round(rng.uniform(1.0, 4.0), 2)}
        delay = 0.0 if kind in {"concurrent", "storage_write", "storage_commit", "lost_response"} or \
            params.get("at") == "registration" else rng.uniform(0.3, 3.0)
        faults.append(Fault(kind, task, delay, params))
    return faults


class Harness:
    def __init__(self, root: Path, *, seed: int, runs: int, faults_per_run: int, max_tries: int = 4,
                 kinds: list[str] | None = None, task_timeout: float = 240.0, min_faults: int = 0) -> None:
        self.root = Path(root)
        self.min_faults = min_faults  # stop early once this many faults were injected (0: run all runs)
        self.seed, self.runs, self.faults_per_run, self.max_tries = seed, runs, faults_per_run, max_tries
        self.kinds = list(kinds or KINDS)
        self.backfill_hours = 26  # the training split holds out one day: the snapshot must span more
        self.task_timeout = task_timeout
        days = max(2, -(-(self.backfill_hours + runs) // 24))
        self.world = World(self.root / "world", seed=seed, days=days, events_per_user=12.0 * days)
        self.results: list[RunResult] = []
        self.violations: list[Violation] = []
        self.pubs: dict[tuple[str, str], Publication] = {}
        self.live_job_violations: list[Violation] = []
        self._watch_keys: list[str] = []
        self._watch_stop = threading.Event()
        self.poller: ApiPoller | None = None

    # ---- setup ---------------------------------------------------------------------------------
    def setup(self) -> None:
        from skyrec.jobs.base import RunInfo, execute

        w = self.world
        w.start()
        gen = w.generate()
        _log(f"generated {gen['events']} events, {gen['items']} items, {gen['users']} users over {w.days} days")
        hours = w.hours()
        last_backfill = hours[self.backfill_hours - 1]
        config = w.config(direct=True)  # setup is not under test: straight to the store, no proxy hop

        def job(name: str, logical: dt.datetime, params: dict[str, str] | None = None,
                start: dt.datetime | None = None, end: dt.datetime | None = None) -> None:
            run = RunInfo(dag_id="chaos_setup", run_id="setup", task_id=name, logical_date=logical,
                          interval_start=start, interval_end=end)
            t = time.time()
            code, payload = execute(name, config=config, run=run, params=params or {})
            _log(f"setup: {name} {time.time() - t:.1f}s")
            if code != 0:
                raise RuntimeError(f"setup job {name} failed: {payload.get('error')}")

        when = last_backfill + dt.timedelta(hours=1)
        for name in ("sync_metadata", "build_catalogue", "ingest_availability"):
            job(name, when)
        job("backfill_activity", when, {"start": hours[0].isoformat(), "end": last_backfill.isoformat()})
        job("ingest_cold_start", when)
        w.start_api()
        self.poller = ApiPoller("127.0.0.1", w.api_port)
        self.poller.set_targets([(v, u) for v in VARIANTS for u in self._some_users(config)])
        self.poller.start()
        threading.Thread(target=self._watch_live_jobs, name="chaos-live-jobs", daemon=True).start()

    def _some_users(self, config: Any, n: int = 4) -> list[str]:
        """A few users with activity (polled before the first publication), plus one unknown user."""
        import pyarrow.parquet as pq

        from skyrec.data.lakeio import parquet_files

        lake = self.world.check_lake()
        m = lake.latest(config, "activity_snapshot")
        users: list[str] = []
        if m is not None:
            files = parquet_files(m)
            if files:
                with lake.fs.open(lake.abspath(f"{m.path}/{files[-1]}"), "rb") as fh:
                    users = sorted(set(pq.read_table(fh, columns=["user_id"]).column("user_id").to_pylist()))[:n]
        return [*users, "chaos-unknown-user"]

    def teardown(self) -> None:
        self._watch_stop.set()
        if self.poller is not None:
            self.poller.stop()
        self.world.stop()

    # ---- the loop ------------------------------------------------------------------------------
    def run_all(self) -> dict[str, Any]:
        started = time.time()
        try:
            self.setup()
            setup_seconds = time.time() - started
            _log(f"setup done in {setup_seconds:.0f}s; {self.runs} runs, {self.faults_per_run} faults per run, "
                 f"seed {self.seed}")
            hours = self.world.hours()[self.backfill_hours:]
            for r in range(self.runs):
                result = self.one_run(r, hours[r])
                self.results.append(result)
                _log(f"run {r}: {'ok' if result.completed else 'FAILED'} in {result.seconds:.0f}s, "
                     f"{sum(f['injected'] for f in result.faults)} faults "
                     f"{[f['kind'] + '@' + f['task'] for f in result.faults if f['injected']]}, "
                     f"{len(result.violations)} violation(s)")
                injected = sum(f["injected"] for res in self.results for f in res.faults)
                if self.min_faults and injected >= self.min_faults:
                    _log(f"{injected} faults injected (>= {self.min_faults}): stopping after {r + 1} runs")
                    break
            time.sleep(1.0)
            self._check_api(None)
            checked, bad = verify_all(self.world.check_lake())
            known = {(v.invariant, v.path) for v in self.violations}
            self.violations.extend(v for v in bad if (v.invariant, v.path) not in known)  # damaged later
            self.violations.extend(self.live_job_violations)
            self.violations.extend(orphan_processes(self.world.home, self.world.own_pids()))
            self.violations.extend(self._redis_leftovers())
            report = self.report(time.time() - started, setup_seconds, checked)
        finally:
            self.teardown()
        return report

    def one_run(self, r: int, hour: dt.datetime) -> RunResult:
        from skyrec.jobs.base import job_key

        rng = random.Random(f"{self.seed}:{r}")
        variant = VARIANTS[r % len(VARIANTS)]
        tasks = chain(hour, variant, self.world.config().variants[variant].model)
        faults = plan_faults(rng, len(tasks), fault_kinds(self.seed, r, self.faults_per_run, self.kinds))
        keys = [job_key(t["dag_id"], t["run_id"], t["task_id"]) for t in tasks]
        self._watch_keys = keys
        run_dir = self.root / "runs" / f"{r:04d}"
        run_dir.mkdir(parents=True, exist_ok=True)
        events = run_dir / "events.jsonl"
        tries = [1] * len(tasks)
        t0 = time.time()
        i, attempts, failure = 0, 0, None
        duplicates: list[subprocess.Popen[bytes]] = []
        while i < len(tasks):
            attempts += 1
            plan = [{**t, "try_number": tries[k]} for k, t in enumerate(tasks) if k >= i]
            code, failed_at, why = self._run_worker(run_dir, events, plan, i, faults, rng, keys, tries, duplicates,
                                                    attempts)
            if code == 0:
                i = len(tasks)
                break
            if failed_at is None:
                if code is not None and code < 0 and attempts <= len(tasks) * self.max_tries:
                    # killed (a kill_worker fault) between tasks or before its first one began: as a scheduler
                    # would, start the worker again at the same task and try (no attempt of it had started)
                    continue
                failure = f"worker exited {code} before starting a task"
                break
            if code == 2:
                failure = f"{tasks[failed_at]['task_id']} failed without retry: {why}"
                break
            dup = any(f.kind == "concurrent" and f.task == failed_at and f.injected for f in faults)
            tries[failed_at] += 2 if dup and tries[failed_at] == 1 else 1  # the second attempt took try 2
            if tries[failed_at] > self.max_tries:
                failure = f"{tasks[failed_at]['task_id']} failed {self.max_tries} tries; last: {why}"
                break
            i = failed_at
        for proc in duplicates:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(self.task_timeout)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        self._settle(keys)
        self.world.proxy.disarm_all() if self.world.proxy else None
        self.world.restart_redis()
        run_violations = self._check_run(r, hour, variant, completed=failure is None)
        briefs = [f.brief(tasks) for f in faults]
        for v in run_violations:
            v.run = r
            v.faults = [b for b in briefs if b["injected"]]
        self.violations.extend(run_violations)
        (run_dir / "faults.json").write_text(json.dumps(briefs, indent=1))
        return RunResult(run=r, hour=hour.isoformat(), variant=variant, completed=failure is None, attempts=attempts,
                         seconds=round(time.time() - t0, 1), faults=briefs, failure=failure,
                         violations=[v.as_dict() for v in run_violations])

    # ---- one worker process and the faults aimed at its attempts -------------------------------
    def _spawn(self, run_dir: Path, events: Path, attempts: list[dict[str, Any]], name: str,
               go: Path | None = None) -> subprocess.Popen[bytes]:
        plan_file = run_dir / f"{name}.plan.json"
        plan_file.write_text(json.dumps({"events": str(events), "go": str(go) if go else None,
                                         "attempts": attempts}))
        log = open(run_dir / f"{name}.log", "ab")
        try:
            return subprocess.Popen([sys.executable, "-m", "skyrec.chaos.worker", str(plan_file)], stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()

    def _run_worker(self, run_dir: Path, events: Path, plan: list[dict[str, Any]], first: int,
                    faults: list[Fault], rng: random.Random, keys: list[str], tries: list[int],
                    duplicates: list[subprocess.Popen[bytes]], n: int) -> tuple[int, int | None, str | None]:
        from skyrec.airflow.backends.local import LocalProcessBackend

        backend = LocalProcessBackend(self.world.config())
        index = {(t["dag_id"], t["task_id"]): first + k for k, t in enumerate(plan)}
        offset = events.stat().st_size if events.exists() else 0
        run_dir / f"go.{n}"
        pending_dups = {f.task: f for f in faults if f.kind == "concurrent" and not f.injected and f.task >= first
                        and tries[f.task] == 1}
        dup_procs: dict[int, tuple[subprocess.Popen[bytes], Path]] = {}
        for task, _f in pending_dups.items():
            dgo = run_dir / f"go.{n}.dup{task}"
            attempt = {**plan[task - first], "try_number": tries[task] + 1}
            dup_procs[task] = (self._spawn(run_dir, events, [attempt], f"worker{n}.dup{task}", dgo), dgo)
            duplicates.append(dup_procs[task][0])
        worker = self._spawn(run_dir, events, plan, f"worker{n}")
        timers: list[tuple[float, Fault]] = []
        armed: dict[int, list[Rule]] = {}
        current: int | None = None
        last_failed: tuple[int, str] | None = None
        started_at = time.monotonic()
        while True:
            lines, offset = _read_new(events, offset)
            for ev in lines:
                if ev.get("pid") != worker.pid:
                    continue
                k = index.get((ev.get("dag_id"), ev.get("task_id")))
                if k is None:
                    continue
                if ev["event"] == "start":
                    current = k
                    started_at = time.monotonic()
                    for f in faults:
                        if f.task == k and not f.injected and tries[k] == 1 and f.at is None:
                            f.at = time.monotonic() + f.delay
                            if f.kind == "concurrent" and k in dup_procs:
                                dup_procs[k][1].touch()
                                f.injected, f.detail = True, f"second attempt try {tries[k] + 1} released"
                            elif f.kind in {"storage_write", "storage_commit", "lost_response"}:
                                armed.setdefault(k, []).append(self._arm(f))
                            else:
                                timers.append((f.at, f))
                elif ev["event"] in {"success", "failed"}:
                    for rule in armed.pop(k, []):
                        self._settle_rule(rule, faults)
                    if ev["event"] == "failed":
                        last_failed = (k, str(ev.get("error")))
                        for f in faults:  # what a full Redis did to the attempt, in the fault's record
                            if f.kind == "redis_full" and f.task == k and f.injected and "attempt:" not in f.detail:
                                f.detail += f"; attempt: {str(ev.get('error'))[:240]}"
                    current = None if current == k else current
            now = time.monotonic()
            for due, f in list(timers):
                if now >= due:
                    timers.remove((due, f))
                    self._inject(f, worker, backend, keys)
            if worker.poll() is not None:
                lines, offset = _read_new(events, offset)
                for ev in lines:
                    if ev.get("pid") == worker.pid and ev["event"] == "failed":
                        k = index.get((ev.get("dag_id"), ev.get("task_id")))
                        if k is not None:
                            last_failed = (k, str(ev.get("error")))
                    if ev.get("pid") == worker.pid and ev["event"] == "start":
                        current = index.get((ev.get("dag_id"), ev.get("task_id")))
                break
            if time.monotonic() - started_at > self.task_timeout:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(10)
                last_failed = (current if current is not None else first, "the attempt hung past the task timeout")
                break
            time.sleep(0.02)
        for k in list(armed):
            for rule in armed.pop(k):
                self._settle_rule(rule, faults)
        for task, (_proc, dgo) in dup_procs.items():
            if not dgo.exists():  # its task never started in this worker: release it anyway, it must cope
                dgo.touch()
                f = pending_dups[task]
                f.injected, f.detail = True, "second attempt released after the worker ended"
        for _, f in timers:
            f.detail = f.detail or "the attempt ended before the fault was due"
        code = int(worker.returncode)
        if code == 0:
            return 0, None, None
        if last_failed is not None and code in (1, 2):
            return code, last_failed[0], last_failed[1]
        return code or 1, current, f"worker exited {code} (killed)"

    def _arm(self, f: Fault) -> Rule:
        assert self.world.proxy is not None
        p = f.params
        if f.kind == "lost_response":
            rule = Rule("lost_response", methods=frozenset({"PUT"}),
                        path_contains="/_manifest/" if p.get("manifest") else "/lake/lake/", skip=int(p["skip"]),
                        label=f.kind)
        else:
            rule = Rule("error", methods=frozenset({"PUT", "POST"}),
                        path_contains="/_manifest/" if f.kind == "storage_commit" else "/lake/lake/",
                        skip=int(p["skip"]), status=int(p["status"]), code=str(p["code"]), burst=int(p["burst"]),
                        label=f.kind)
        rule.fault = f  # type: ignore[attr-defined]
        return self.world.proxy.arm(rule)

    def _settle_rule(self, rule: Rule, faults: list[Fault]) -> None:
        assert self.world.proxy is not None
        self.world.proxy.disarm(rule)
        f: Fault = rule.fault  # type: ignore[attr-defined]
        if rule.fired:
            f.injected = True
            f.detail = f"{rule.fired[0]['method']} {rule.fired[0]['path']} -> {rule.fired[0]['what']}" + (
                f" x{len(rule.fired)}" if len(rule.fired) > 1 else "")
        else:
            f.detail = "no matching request before the attempt ended"

    def _inject(self, f: Fault, worker: subprocess.Popen[bytes], backend: Any, keys: list[str]) -> None:
        if f.kind == "kill_job":
            for h in backend.find(keys[f.task]):
                if backend.status(h) == "RUNNING" and h.get("pgid"):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(int(h["pgid"]), signal.SIGKILL)
                        f.injected, f.detail = True, f"killed job {h['launch_id']}"
                    return
            f.detail = "no live job at the time"
        elif f.kind == "kill_worker":
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
                f.injected, f.detail = True, f"killed worker pid {worker.pid}"
            else:
                f.detail = "the worker had ended"
        elif f.kind == "redis_restart":
            self.world.kill_redis()
            f.injected, f.detail = True, f"redis down for {f.params['down']}s"

            def back(down: float = float(f.params["down"])) -> None:
                time.sleep(down)
                self.world.restart_redis()

            threading.Thread(target=back, daemon=True).start()
        elif f.kind == "redis_full":
            threading.Thread(target=self._squeeze_redis, args=(f,), daemon=True).start()

    def _squeeze_redis(self, f: Fault, pause_ms: int = 30_000) -> None:
        """Set the serving Redis's maxmemory to what it holds plus ``room`` for ``full`` seconds. ``at:
        registration`` aims between the load's registration and its keys: writes are paused (``CLIENT PAUSE
        WRITE``) until a client is held on a script (the registration, the first script a publication runs),
        then the limit is set and writes resume, so the load fills Redis midway."""
        import redis

        client = redis.Redis.from_url(self.world.config().publish.redis_url, socket_timeout=5)
        held = ""
        try:
            if f.params.get("at") == "registration":
                client.execute_command("CLIENT", "PAUSE", pause_ms, "WRITE")
                deadline = time.monotonic() + pause_ms / 1000
                try:
                    while not held and time.monotonic() < deadline:
                        held = next((c.get("addr", "?") for c in client.client_list()
                                     if "b" in c.get("flags", "") and c.get("cmd") in {"eval", "evalsha"}), "")
                        time.sleep(0.005)
                    used = int(client.info("memory")["used_memory"])
                    client.config_set("maxmemory", used + int(f.params["room"]))
                finally:
                    client.execute_command("CLIENT", "UNPAUSE")
            else:
                used = int(client.info("memory")["used_memory"])
                client.config_set("maxmemory", used + int(f.params["room"]))
            f.injected = True
            f.detail = (f"maxmemory {used + int(f.params['room'])} for {f.params['full']}s"
                        + (f", set while {held}'s script was held by a write pause" if held else
                           ", no script held within the pause" if f.params.get("at") == "registration" else ""))
        except redis.exceptions.RedisError as exc:
            f.detail = f"serving Redis unreachable: {exc}"
            return
        finally:
            client.close()
        time.sleep(float(f.params["full"]))
        with contextlib.suppress(redis.exceptions.RedisError):
            again = redis.Redis.from_url(self.world.config().publish.redis_url, socket_timeout=5)
            again.config_set("maxmemory", 0)
            again.close()

    def _settle(self, keys: list[str]) -> None:
        """Wait for every job of the run to end (a job outlives its killed worker); kill what hangs on."""
        from skyrec.airflow.backends.local import LocalProcessBackend, group_members

        backend = LocalProcessBackend(self.world.config())
        deadline = time.monotonic() + self.task_timeout
        for key in keys:
            for h in backend.find(key):
                while backend.status(h) == "RUNNING" and time.monotonic() < deadline:
                    time.sleep(0.1)
                if h.get("pgid") and group_members(int(h["pgid"])):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(int(h["pgid"]), signal.SIGKILL)

    def _watch_live_jobs(self) -> None:
        from skyrec.airflow.backends.local import LocalProcessBackend, group_members

        backend: LocalProcessBackend | None = None
        seen: set[tuple[str, ...]] = set()
        while not self._watch_stop.wait(0.1):
            try:
                backend = backend or LocalProcessBackend(self.world.config())
                for key in list(self._watch_keys):
                    live = [h["launch_id"] for h in backend.find(key)
                            if h.get("pgid") and group_members(int(h["pgid"]))]
                    if len(live) > 1 and tuple(sorted(live)) not in seen:
                        seen.add(tuple(sorted(live)))
                        self.live_job_violations.append(Violation(
                            "one_live_job", f"job key {key}: {len(live)} live jobs at once: {sorted(live)}"))
            except (OSError, ValueError, KeyError):
                continue

    # ---- checks --------------------------------------------------------------------------------
    def _check_run(self, r: int, hour: dt.datetime, variant: str, *, completed: bool) -> list[Violation]:
        config = self.world.config()
        lake = self.world.check_lake()
        outputs = run_outputs(config, hour, variant)
        out = check_outputs(lake, outputs, complete=completed)
        out += check_records(lake, config, hour, outputs["activity_delta"], outputs["activity_snapshot"])
        m = lake.manifest(outputs["predictions"])
        if m is not None:
            try:
                pub = load_publication(lake, m, config.publish.key_prefix)
                self.pubs[(pub.variant, pub.publication)] = pub
            except (OSError, ValueError, KeyError) as exc:
                out.append(Violation("verify", f"{m.path}: publication unreadable: {exc}", path=m.path))
        out += self._check_api(variant if completed else None)
        self._retarget()
        return out

    def _redis_leftovers(self) -> list[Violation]:
        import redis

        config = self.world.config()
        client = redis.Redis.from_url(config.publish.redis_url, socket_timeout=30)
        try:
            return redis_leftovers(client, config.publish.key_prefix)
        except redis.exceptions.RedisError as exc:
            return [Violation("redis_leftovers", f"serving Redis unreadable after the runs: {exc}")]
        finally:
            client.close()

    def _retarget(self) -> None:
        if self.poller is None:
            return
        targets: list[tuple[str, str]] = []
        for variant in VARIANTS:
            pubs = [p for (v, _), p in sorted(self.pubs.items()) if v == variant]
            if not pubs:
                continue
            users = sorted(pubs[-1].recs)[:4]
            targets += [(variant, u) for u in users] + [(variant, "chaos-unknown-user")]
        self.poller.set_targets(targets)

    def _check_api(self, variant: str | None) -> list[Violation]:
        if self.poller is None:
            return []
        return api_violations(self.poller.take(), self.pubs)

    # ---- report --------------------------------------------------------------------------------
    def report(self, wall: float, setup_seconds: float, manifests_checked: int) -> dict[str, Any]:
        injected: dict[str, int] = dict.fromkeys(self.kinds, 0)
        planned: dict[str, int] = dict.fromkeys(self.kinds, 0)
        for res in self.results:
            for f in res.faults:
                planned[f["kind"]] += 1
                injected[f["kind"]] += int(f["injected"])
        by_invariant: dict[str, int] = {}
        for v in self.violations:
            by_invariant[v.invariant] = by_invariant.get(v.invariant, 0) + 1
        poller = self.poller
        return {
            "seed": self.seed, "runs": len(self.results),
            "runs_completed": sum(r.completed for r in self.results),
            "faults_injected": sum(injected.values()), "faults_by_kind": injected, "faults_planned": planned,
            "violations": len(self.violations), "violations_by_invariant": by_invariant,
            "violation_details": [v.as_dict() for v in self.violations],
            "failed_runs": [{"run": r.run, "failure": r.failure, "faults": [f for f in r.faults if f["injected"]]}
                            for r in self.results if not r.completed],
            "api": {"requests": poller.requests if poller else 0,
                    "statuses": dict(poller.statuses) if poller else {},
                    "transport_errors": poller.transport_errors if poller else 0,
                    "publications_seen": len(self.pubs)},
            "manifests_verified": manifests_checked,
            "wall_seconds": round(wall, 1), "setup_seconds": round(setup_seconds, 1),
            "runs_detail": [asdict(r) for r in self.results],
        }


def _read_new(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    out = []
    for line in data[:end].splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out, offset + end


def summary_text(report: dict[str, Any]) -> str:
    lines = [f"chaos: seed {report['seed']}, {report['runs']} runs ({report['runs_completed']} completed), "
             f"{report['faults_injected']} faults injected, {report['violations']} invariant violation(s), "
             f"wall {report['wall_seconds']:.0f}s (setup {report['setup_seconds']:.0f}s)",
             "faults by kind: " + ", ".join(f"{k} {v}" for k, v in report["faults_by_kind"].items()),
             f"API: {report['api']['requests']} requests, statuses {report['api']['statuses']}, "
             f"{report['api']['publications_seen']} publications; {report['manifests_verified']} manifests verified"]
    if report["violations_by_invariant"]:
        lines.append("violations by invariant: " + ", ".join(f"{k} {v}" for k, v in
                                                             report["violations_by_invariant"].items()))
    for v in report["violation_details"][:30]:
        faults = ", ".join(f"{f['kind']}@{f['task']} ({f['detail']})" for f in v.get("faults") or [])
        lines.append(f"  - [{v['invariant']}] run {v['run']}: {v['detail']}" + (f"  <- {faults}" if faults else ""))
    for fr in report["failed_runs"]:
        lines.append(f"  run {fr['run']} did not complete: {fr['failure']}")
    return "\n".join(lines)


def run_chaos(*, seed: int, runs: int, faults_per_run: int, root: Path | None = None,
              kinds: list[str] | None = None, report_path: Path | None = None,
              min_faults: int = 0) -> dict[str, Any]:
    base = Path(root) if root else Path(tempfile.mkdtemp(prefix="skyrec-chaos-"))
    harness = Harness(base, seed=seed, runs=runs, faults_per_run=faults_per_run, kinds=kinds,
                      min_faults=min_faults)
    report = harness.run_all()
    report["root"] = str(base)
    if report_path is not None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(json.dumps(report, indent=1, default=str))
    return report
