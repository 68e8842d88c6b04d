"""compute_predictions (and the activity ingest) on a real Dask cluster: a ``dask scheduler`` and two
``dask worker`` processes on 127.0.0.1, talking over TCP, driven by Beam's DaskRunner.

The committed output equals the local engine's and DirectRunner's after one documented normalisation (the
publication id, unique per attempt by contract, replaced in the RESP keys: ``comparable_files``); a worker
killed with SIGKILL mid-run costs a re-run of its tasks, never a second commit or a doubled shard.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import synth

from skyrec.config import Config, ConfigError, load_config
from skyrec.jobs.base import RunInfo, execute
from skyrec.pipelines.predictions import comparable_files, pipeline_args
from skyrec.pipelines.runners import DASK_RUNNER, LOCAL_RUNNER
from skyrec.storage import MANIFEST_DIR, Lake

ROOT = Path(__file__).resolve().parents[2]
DASK = str(Path(sys.executable).parent / "dask")
RUN = RunInfo(dag_id="precompute_recommendations_als_comedy_featured_v1", run_id="r1", task_id="compute_predictions",
              logical_date=synth.AT)
VARIANT = {"variant": "comedy_featured"}


@dataclass
class DaskCluster:
    """A scheduler and workers as separate OS processes (no nanny: a killed worker stays dead)."""

    folder: Path
    address: str = ""
    scheduler: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)

    def start(self, n_workers: int = 2) -> DaskCluster:
        from distributed import Client

        self.folder.mkdir(parents=True, exist_ok=True)
        info = self.folder / "scheduler.json"
        self.scheduler = self._spawn("scheduler", [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0",
                                                   "--no-dashboard", "--scheduler-file", str(info)])
        deadline = time.monotonic() + 60
        while not info.exists() or not info.read_text().strip():
            assert self.scheduler.poll() is None, (self.folder / "scheduler.log").read_text()
            assert time.monotonic() < deadline, "dask scheduler did not start"
            time.sleep(0.05)
        self.address = json.loads(info.read_text())["address"]
        assert self.address.startswith("tcp://127.0.0.1:")
        self.workers = [self._spawn(f"worker{i}", [DASK, "worker", self.address, "--nthreads", "1", "--no-nanny",
                                                   "--no-dashboard", "--host", "127.0.0.1", "--name", f"w{i}",
                                                   "--local-directory", str(self.folder / f"w{i}")])
                        for i in range(n_workers)]
        with Client(self.address, timeout=60) as client:
            client.wait_for_workers(n_workers, timeout=60)
        return self

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        with open(self.folder / f"{name}.log", "wb") as log:  # the child keeps its own descriptor
            return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder)

    def stop(self) -> None:
        """Workers first (a worker whose scheduler went first lingers in "closing"), then the scheduler."""
        for group in (self.workers, [self.scheduler]):
            for proc in group:
                if proc is not None and proc.poll() is None:
                    proc.terminate()
            for proc in group:
                if proc is None:
                    continue
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    cluster = DaskCluster(tmp_path_factory.mktemp("dask"))
    try:
        yield cluster.start(2)
    finally:
        cluster.stop()


def _config(home: Path, overrides: dict) -> Config:
    home.mkdir(parents=True, exist_ok=True)
    base = {"precompute": {"k": 10, "batch_size": 32, "sub_batch": 16, "shard_users": 64, "threads": 1,
                           "rules": {"max_per_brand": 2, "max_age_days": {"News": 2}}},
            "variants": {VARIANT["variant"]: {"model": "als"}}}  # synth.py's dense artefact is committed as als
    for key, value in overrides.get("precompute", {}).items():
        base["precompute"][key] = value
    return load_config("local", root=ROOT, overrides=base, environ={**os.environ, "SKYREC_HOME": str(home)})


def _run(cfg: Config) -> tuple[Lake, object]:
    code, payload = execute("compute_predictions", config=cfg, run=RUN, params=VARIANT)
    assert code == 0, payload
    lake = Lake.from_config(cfg)
    return lake, lake.require(payload["summary"]["outputs"][0])


def _results(lake: Lake, manifest) -> list[dict]:
    """The per-shard result records the pipeline left in the (committed) attempt's folder."""
    attempt = manifest.files[0].path.split("/")[1]
    folder = lake.abspath(f"{manifest.path}/_attempts/{attempt}/results")
    return [json.loads(Path(folder, n).read_text()) for n in sorted(os.listdir(folder))]


def _manifests(lake: Lake, manifest) -> list[str]:
    return sorted(n for n in os.listdir(lake.abspath(f"{manifest.path}/{MANIFEST_DIR}")) if n.endswith(".json"))


@pytest.mark.integration
def test_dask_cluster_output_equals_direct_runner_and_local_engine(tmp_path: Path, dask_cluster: DaskCluster) -> None:
    outputs = {}
    runs = {"local": {"engine": "local"},
            "direct": {"engine": "beam", "runner": "DirectRunner", "direct_num_workers": 1,
                       "direct_running_mode": "in_memory"},
            "dask": {"engine": "beam", "runner": "DaskRunner", "dask": {"address": dask_cluster.address}}}
    for name, pc in runs.items():
        cfg = _config(tmp_path / name, {"precompute": pc})
        synth.build(cfg)  # the same seed: the same inputs in each lake
        lake, m = _run(cfg)
        outputs[name] = (lake, m, comparable_files(lake, m))

    lake, m, dask_files = outputs["dask"]
    # the work ran on the cluster's two worker processes, not in the driver
    workers = {r["worker"].rsplit(":", 1)[1] for r in _results(lake, m)}
    assert workers == {str(w.pid) for w in dask_cluster.workers}
    assert m.meta["engine"] == "beam" and m.meta["beam"] == {"state": "DONE", "runner": "DaskRunner",
                                                              "dask_partitions": 5}
    assert m.meta["users"] == 299 and len(m.meta["parquet_files"]) == 5  # 300 users in shards of 64
    for other in ("local", "direct"):
        files = outputs[other][2]
        assert sorted(files) == sorted(dask_files)
        for name in files:
            assert files[name] == dask_files[name], f"{name}: {other} and dask differ"
        # the commit's own record agrees: the same files, sizes, rows; Parquet checksums equal as written
        mine = {f.path.split("/", 2)[-1]: f for f in m.files}
        theirs = {f.path.split("/", 2)[-1]: f for f in outputs[other][1].files}
        assert {n: (f.size, f.rows) for n, f in mine.items()} == {n: (f.size, f.rows) for n, f in theirs.items()}
        assert all(mine[n].sha256 == theirs[n].sha256 for n in mine if n.endswith(".parquet"))
        meta = {k: v for k, v in outputs[other][1].meta.items()
                if k not in {"publication", "engine", "beam", "seconds", "scoring_seconds", "activity"}}
        assert meta == {k: m.meta[k] for k in meta}
    # the normalisation is needed and is the only one: the raw RESP bytes differ by the publication id alone
    raw = Path(lake.abspath(f"{m.path}/{m.files[-1].path}")).read_bytes()
    assert m.files[-1].path.endswith(".resp") and m.meta["publication"].encode() in raw


@pytest.mark.integration
def test_worker_killed_mid_run_commits_once(tmp_path: Path) -> None:
    """SIGKILL one of two workers while it scores: the scheduler re-runs its tasks on the other; the job
    commits one manifest with every shard once, equal to the local engine's output; a retry is a no-op."""
    from distributed import Client

    cluster = DaskCluster(tmp_path / "dask")
    try:
        cluster.start(2)
        pcs = {"shard_users": 50, "threads": 1}
        ref_cfg = _config(tmp_path / "local", {"precompute": {**pcs, "engine": "local"}})
        synth.build(ref_cfg)
        ref_lake, ref = _run(ref_cfg)
        cfg = _config(tmp_path / "dask-run", {"precompute": {**pcs, "engine": "beam", "runner": "DaskRunner",
                                                             "dask": {"address": cluster.address}}})
        synth.build(cfg)
        lake = Lake.from_config(cfg)
        n_shards = 6
        seen: dict[str, object] = {}

        def kill_one_while_scoring() -> None:
            try:
                with Client(cluster.address, timeout=30) as client:
                    pids = client.run(os.getpid)  # worker address -> its process id
                    deadline = time.monotonic() + 120
                    while time.monotonic() < deadline:
                        done = list(Path(lake.abspath("")).rglob("results/part-*.json"))
                        busy = {a: ts for a, ts in client.processing().items() if ts}
                        if done and busy:
                            victim = sorted(busy)[0]
                            seen.update(done=len(done), pid=pids[victim], tasks=len(busy[victim]))
                            os.kill(pids[victim], signal.SIGKILL)
                            return
                        time.sleep(0.02)
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                seen["error"] = repr(exc)

        killer = threading.Thread(target=kill_one_while_scoring, daemon=True)
        killer.start()
        code, payload = execute("compute_predictions", config=cfg, run=RUN, params=VARIANT)
        killer.join(10)
        assert code == 0, payload
        # the kill landed mid-run, on a worker that was scoring, and that worker is gone
        assert seen and 1 <= seen["done"] < n_shards and seen["tasks"] >= 1, seen
        victim = next(w for w in cluster.workers if w.pid == seen["pid"])
        assert victim.wait(10) == -signal.SIGKILL
        m = lake.require(payload["summary"]["outputs"][0])
        assert len(m.meta["parquet_files"]) == n_shards and m.meta["users"] == 299
        assert _manifests(lake, m) == ["000000.json"]
        # every shard exactly once, byte-equal to the local engine's output (publication id normalised)
        assert comparable_files(lake, m) == comparable_files(ref_lake, ref)
        assert m.rows == ref.rows and m.meta["users_with_recs"] == ref.meta["users_with_recs"]
        # after the kill only the surviving worker scored: the shards it re-ran carry its pid
        survivor = next(w for w in cluster.workers if w.pid != seen["pid"])
        assert str(survivor.pid) in {r["worker"].rsplit(":", 1)[1] for r in _results(lake, m)}

        # a retry of the task finds the commit: no second manifest, nothing re-scored
        code, again = execute("compute_predictions", config=cfg, run=RUN, params=VARIANT)
        assert code == 0 and again["summary"]["note"] == "already committed"
        assert _manifests(lake, m) == ["000000.json"]
    finally:
        cluster.stop()


@pytest.mark.integration
def test_activity_ingest_pipeline_on_dask_equals_direct_runner(tmp_path: Path, dask_cluster: DaskCluster) -> None:
    """Create -> ParDo -> GroupByKey -> ParDo: every transform the activity ingest uses runs on DaskRunner
    and writes byte-identical files (delta, quarantine, summary)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from skyrec.pipelines.activity import IntervalTarget, Spec
    from skyrec.pipelines.activity import execute as run_activity

    hour = dt.datetime(2026, 3, 1, 10, tzinfo=dt.UTC)
    t = hour + dt.timedelta(minutes=5)
    rows = [("e1", "u1", "p1", "play", t, 120.0), ("e2", "u1", "p2", "complete", t, 1800.0),
            ("e2", "u1", "p2", "complete", t, 1800.0), ("e3", "u2", "p1", "pause", t, 10.0),
            ("e4", "u2", "zzz", "play", t, 100.0), ("e5", None, "p1", "play", t, 100.0),
            ("e6", "u3", "p2", "play", t + dt.timedelta(days=3), 100.0)]
    src = tmp_path / "source"
    src.mkdir()
    for i in range(4):  # four files of one hour and one of the next: two groups
        cols = list(zip(*[(f"{r[0]}-{i}" if r[0] != "e2" else r[0], *r[1:]) for r in rows], strict=True))
        pq.write_table(pa.table({"event_id": cols[0], "user_id": cols[1], "item_id": cols[2],
                                 "event_type": cols[3], "event_ts": pa.array(cols[4], pa.timestamp("us", "UTC")),
                                 "played_seconds": pa.array(cols[5], pa.float32()),
                                 "platform": ["ios"] * len(rows)}), src / f"f{i}.parquet")
    (src / "bad.parquet").write_bytes((src / "f0.parquet").read_bytes()[:200])  # truncated: quarantined whole
    cat = tmp_path / "catalogue.parquet"
    pq.write_table(pa.table({"item_id": ["p1", "p2"]}), cat)
    rules = {"event_types": ["play", "complete"], "min_play_seconds": 30, "future_tolerance_minutes": 10,
             "past_limit_days": 400}
    keys = {"20260301T10": hour, "20260301T11": hour + dt.timedelta(hours=1)}
    files = [("20260301T10", str(src / f"f{i}.parquet")) for i in range(3)] + [
        ("20260301T10", str(src / "bad.parquet")), ("20260301T11", str(src / "f3.parquet"))]
    out = {}
    for name, args in {"direct": [f"--runner={LOCAL_RUNNER}"],  # what config's DirectRunner runs on
                       "dask": [f"--runner={DASK_RUNNER}", f"--dask_client_address={dask_cluster.address}",
                                "--dask_npartitions=5"]}.items():
        spec = Spec(source_kind="local", source_options={}, lake_url=str(tmp_path), lake_options={},
                    catalogue_file=str(cat), rules=rules,
                    intervals={k: IntervalTarget(h.isoformat(), (h + dt.timedelta(hours=1)).isoformat(),
                                                 str(tmp_path / name / k)) for k, h in keys.items()})
        run_activity(spec, files, PipelineOptions(args))
        out[name] = {str(p.relative_to(tmp_path / name)): p.read_bytes()
                     for p in sorted((tmp_path / name).rglob("*")) if p.is_file()}
    assert out["dask"] == out["direct"]
    assert {"20260301T10/part-00000.parquet", "20260301T10/_quarantine/corrupt_file.jsonl",
            "20260301T11/_summary.json"} <= set(out["dask"])
    summary = json.loads(out["dask"]["20260301T10/_summary.json"])
    assert summary["rows_out"] > 0 and summary["rows_in"] == summary["rows_out"] + summary["bad_rows"] + sum(
        summary["filtered"].values())


def test_dask_runner_config_is_validated_and_pinned(config_factory) -> None:
    with pytest.raises(ConfigError, match=r"precompute.dask.address: required"):
        config_factory({"precompute": {"runner": "DaskRunner"}})
    with pytest.raises(ConfigError, match=r"precompute.dask.address.*not a Dask scheduler address"):
        config_factory({"precompute": {"runner": "DaskRunner", "dask": {"address": "127.0.0.1:8786"}}})
    cfg = config_factory({"precompute": {"runner": "DaskRunner",
                                         "dask": {"address": "tcp://10.1.2.3:8786", "partitions": 8}}})
    args = pipeline_args(cfg, "preds")
    assert args[:2] == [f"--runner={DASK_RUNNER}", "--job_name=preds"]
    assert {"--dask_client_address=tcp://10.1.2.3:8786", "--dask_connection_timeout=30", "--dask_npartitions=8",
            "--dask_client_name=preds"} <= set(args)
    # unset partitions: one per shard, decided when the shards are known
    cfg = config_factory({"precompute": {"runner": "DaskRunner", "dask": {"address": "tls://sched:8786"}}})
    assert not any(a.startswith("--dask_npartitions") for a in pipeline_args(cfg, "preds"))


@pytest.mark.integration
def test_unreachable_scheduler_fails_naming_the_key(tmp_path: Path) -> None:
    from skyrec.redis_local import free_port

    cfg = _config(tmp_path / "home", {"precompute": {
        "engine": "beam", "runner": "DaskRunner",
        "dask": {"address": f"tcp://127.0.0.1:{free_port()}", "connection_timeout_seconds": 1}}})
    synth.build(cfg)
    code, payload = execute("compute_predictions", config=cfg, run=RUN, params=VARIANT)
    assert code != 0 and "precompute.dask.address: cannot reach the Dask scheduler" in payload["error"]
    assert Lake.from_config(cfg).latest(cfg, "predictions") is None  # nothing committed


def test_worker_scores_with_single_threaded_blas(config_factory, tmp_path: Path) -> None:
    """In a worker process (Dask, DirectRunner) the kernel's threads are the parallelism: BLAS runs one
    thread inside, else OpenBLAS's own threads spin against the other workers on the same cores."""
    from threadpoolctl import threadpool_info

    from skyrec.pipelines.predictions import ScoreShards
    from skyrec.scoring.engine import PrecomputeSpec

    cfg = config_factory()
    s = synth.build(cfg, n_users=64)
    spec = PrecomputeSpec(variant="recommended_for_you", publication="m.1", lake_url=cfg.lake_url,
                          model_path=s.model_path, catalogue_path="catalogue/snapshot=20260301T100000",
                          out_dir=str(tmp_path / "out"), at=synth.AT.isoformat(), k=5, threads=1)
    dofn = ScoreShards(spec.to_json())
    dofn.setup()
    assert dofn.scorer is not None
    seen: list[int] = []
    score = dofn.scorer.score

    def spy(rows):
        seen.extend(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
        return score(rows)

    dofn.scorer.score = spy  # type: ignore[method-assign]
    assert list(dofn.process((0, 0, 64))) == ["resp/part-00000.resp"]
    dofn.teardown()
    assert seen and set(seen) == {1}
