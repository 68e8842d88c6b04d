"""compute_predictions as an Apache Beam pipeline: shards of users -> scored shard files.

The pipeline only distributes work: each element is one shard (a range of user rows); a batch ``DoFn``
loads the model and the variant's candidates once per worker (``setup``) and calls the same
``Scorer.run_shard`` the local engine uses, so there is one implementation of the scoring logic. Each shard
writes its Parquet/RESP files and a small result JSON (``results/part-NNNNN.json``) into the job's staging
folder under deterministic names, so a retried bundle overwrites its own files and the driver reads the
results back after the run (no large data through the runner).

Runners by config (``precompute.runner``): DirectRunner (``direct_num_workers``, ``direct_running_mode``),
DataflowRunner, FlinkRunner or SparkRunner with the pinned settings of ``jobs.dataflow`` / ``jobs.flink`` /
``jobs.spark`` (``skyrec.pipelines.runners``, the same options the Beam job backends launch with), or
DaskRunner on a self-hosted Dask cluster (``precompute.dask``: scheduler address, partitions).

On Dask each partition of the shards is one task: the DoFn is set up (the model loaded) per task, and a
task lost with its worker (killed, out of memory) is re-run by the scheduler on another worker, as are the
finished tasks whose results lived on that worker. Re-running a shard rewrites the same files with the same
bytes, and only the driver commits, after the whole graph is done: a lost worker costs time, never a second
commit or a doubled shard. The job's Dask client is closed at the end (Beam's runner leaves it open); the
scheduler releases a job's tasks when its client goes away, so a killed driver's queued shards are dropped
(a shard already running finishes into the attempt's staging, which is never committed).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from skyrec.config import Config
from skyrec.scoring.engine import PrecomputeSpec, Scorer, ShardResult


class ScoreShards(beam.DoFn):
    """Scores shards of users; the model is loaded once per worker."""

    def __init__(self, spec_json: str) -> None:
        self.spec_json = spec_json
        self.scorer: Scorer | None = None
        self.users = Metrics.counter("skyrec.predictions", "users")
        self.rec_keys = Metrics.counter("skyrec.predictions", "rec_keys")
        self.empty = Metrics.counter("skyrec.predictions", "users_without_result")

    def setup(self) -> None:
        self.scorer = Scorer.from_spec(PrecomputeSpec.from_json(self.spec_json))

    def process(self, shard: tuple[int, int, int]) -> Iterator[str]:
        from threadpoolctl import threadpool_limits

        assert self.scorer is not None
        # the kernel's threads (``precompute.threads``) are the parallelism; BLAS inside stays single-threaded
        # (with one kernel thread, OpenBLAS's own threads would otherwise spin against the other worker
        # processes on the same cores: 2-4x slower on 2 cores, measured)
        with threadpool_limits(limits=1, user_api="blas"):
            result: ShardResult = self.scorer.run_shard(*shard)
        self.users.inc(result.users)
        self.rec_keys.inc(result.rec_keys)
        self.empty.inc(result.empty)
        write_result(self.scorer, result)
        yield result.resp

    def teardown(self) -> None:
        if self.scorer is not None:
            self.scorer.close()


def write_result(scorer: Scorer, result: ShardResult) -> str:
    name = f"results/part-{result.shard:05d}.json"
    full = f"{scorer.spec.out_dir}/{name}"
    scorer.lake.fs.makedirs(full.rsplit("/", 1)[0], exist_ok=True)
    # which process scored it (operators: where a shard ran; tests: that the work was spread)
    record = {**result.as_dict(), "worker": f"{socket.gethostname()}:{os.getpid()}"}
    with scorer.lake.fs.open(full, "wb") as fh:
        fh.write(json.dumps(record).encode())
    return name


def pipeline_args(config: Config, job_name: str) -> list[str]:
    """Runner options from config (pinned: the same config gives the same job settings)."""
    from skyrec.pipelines import launcher_options

    launched = launcher_options()
    if launched is not None:  # started by a Beam backend: its pinned options, its job name
        return launched
    from skyrec.pipelines.runners import beam_runner, options_to_args, runner_options

    pc = config.precompute
    args = [f"--runner={beam_runner(pc.runner)}", f"--job_name={job_name}"]
    if pc.runner == "DirectRunner":
        return args + [f"--direct_num_workers={pc.direct_num_workers}",
                       f"--direct_running_mode={pc.direct_running_mode}"]
    if pc.runner == "DaskRunner":  # the job's name in the scheduler's logs
        args.append(f"--dask_client_name={job_name}")
    return args + options_to_args(runner_options(config, pc.runner))


def run(spec: PrecomputeSpec, shards: list[tuple[int, int, int]], args: list[str]) -> dict[str, Any]:
    """Run the pipeline to completion; returns the runner's final state and metrics."""
    from skyrec.pipelines.runners import DASK_RUNNER

    runner = next((a.split("=", 1)[1] for a in args if a.startswith("--runner=")), "")
    dask = runner in (DASK_RUNNER, "DaskRunner")
    if dask:
        args = dask_args(args, len(shards))
    options = PipelineOptions(args, save_main_session=False)
    p = beam.Pipeline(options=options)
    (p
     | "Shards" >> beam.Create(shards)
     | "Spread" >> beam.Reshuffle()
     | "Score" >> beam.ParDo(ScoreShards(spec.to_json())))
    try:
        result = p.run()
    except OSError as exc:  # the Dask client could not reach the scheduler
        if not dask:
            raise
        address = next((a.split("=", 1)[1] for a in args if a.startswith("--dask_client_address=")), "?")
        raise RuntimeError(f"precompute.dask.address: cannot reach the Dask scheduler at {address}: {exc}") from exc
    try:
        state = result.wait_until_finish()
    finally:
        client = getattr(result, "client", None)
        if client is not None:  # DaskRunner leaves its client open: close it (the scheduler drops our tasks)
            client.close()
    out: dict[str, Any] = {"state": str(state or getattr(result, "state", "DONE")),
                           "runner": "DaskRunner" if dask else runner}
    if dask:
        given = next((a.split("=", 1)[1] for a in args if a.startswith("--dask_npartitions=")), None)
        out["dask_partitions"] = int(given) if given else None
    return out


def dask_args(args: list[str], n_shards: int) -> list[str]:
    """DaskRunner options: one partition per shard unless configured (Beam's default of 128 elements a
    partition would score every shard in one task, on one worker); a partition size given is kept."""
    if any(a.startswith(("--dask_npartitions=", "--dask_partition_size=")) for a in args):
        return args
    return [*args, f"--dask_npartitions={max(1, n_shards)}"]


PUBLICATION_PLACEHOLDER = b"<publication>"


def comparable_files(lake: Any, manifest: Any) -> dict[str, bytes]:
    """A committed predictions output as {file name: bytes}, comparable across runs, engines and runners.

    The one normalisation: the publication id, unique per attempt by contract (it namespaces every key, so no
    cache keyed by it can mix two contents), is replaced by ``<publication>`` in the RESP files. Names lose
    the attempt's staging folder. Parquet is compared byte for byte as written.
    """
    from skyrec.storage import ATTEMPTS_DIR

    pub = str(manifest.meta["publication"]).encode()
    out: dict[str, bytes] = {}
    for f in manifest.files:
        name = f.path.split("/", 2)[-1] if f.path.startswith(f"{ATTEMPTS_DIR}/") else f.path
        with lake.fs.open(lake.abspath(f"{manifest.path}/{f.path}"), "rb") as fh:
            data = fh.read()
        out[name] = data.replace(pub, PUBLICATION_PLACEHOLDER) if name.endswith(".resp") else data
    return out
