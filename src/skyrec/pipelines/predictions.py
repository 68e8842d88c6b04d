"""compute_predictions as an Apache Beam pipeline: shards of users -> scored shard files.

The pipeline only distributes work: each element is one shard (a range of user rows); a batch ``DoFn``
loads the model and the variant's candidates once per worker (``setup``) and calls the same
``Scorer.run_shard`` the local engine uses, so there is one implementation of the scoring logic. Each shard
writes its Parquet/RESP files and a small result JSON (``results/part-NNNNN.json``) into the job's staging
folder under deterministic names, so a retried bundle overwrites its own files and the driver reads the
results back after the run (no large data through the runner).

Runners by config (``precompute.runner``): DirectRunner (``direct_num_workers``, ``direct_running_mode``),
DataflowRunner, FlinkRunner or SparkRunner with the pinned settings of ``jobs.dataflow`` / ``jobs.flink`` /
``jobs.spark`` (``skyrec.pipelines.runners``, the same options the Beam job backends launch with).
"""

from __future__ import annotations

import json
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
        assert self.scorer is not None
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
    with scorer.lake.fs.open(full, "wb") as fh:
        fh.write(json.dumps(result.as_dict()).encode())
    return name


def pipeline_args(config: Config, job_name: str) -> list[str]:
    """Runner options from config (pinned: the same config gives the same job settings)."""
    from skyrec.pipelines import launcher_options

    launched = launcher_options()
    if launched is not None:  # started by a Beam backend: its pinned options, its job name
        return launched
    from skyrec.pipelines.runners import options_to_args, runner_options

    pc = config.precompute
    args = [f"--runner={pc.runner}", f"--job_name={job_name}"]
    if pc.runner == "DirectRunner":
        return args + [f"--direct_num_workers={pc.direct_num_workers}",
                       f"--direct_running_mode={pc.direct_running_mode}"]
    return args + options_to_args(runner_options(config, pc.runner))


def run(spec: PrecomputeSpec, shards: list[tuple[int, int, int]], args: list[str]) -> dict[str, Any]:
    """Run the pipeline to completion; returns the runner's final state and metrics."""
    options = PipelineOptions(args, save_main_session=False)
    with beam.Pipeline(options=options) as p:
        (p
         | "Shards" >> beam.Create(shards)
         | "Spread" >> beam.Reshuffle()
         | "Score" >> beam.ParDo(ScoreShards(spec.to_json())))
    result = p.result if hasattr(p, "result") else None
    state = str(getattr(result, "state", "DONE"))
    return {"state": state, "runner": next((a.split("=", 1)[1] for a in args if a.startswith("--runner=")), "")}
