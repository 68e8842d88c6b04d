"""compute_predictions runs on Dataflow, Flink or Spark by config, with the pinned settings of that runner:
the same options the Beam job backends launch with (one definition: ``skyrec.pipelines.runners``)."""

from __future__ import annotations

import pytest

from skyrec.config import ConfigError
from skyrec.pipelines.predictions import pipeline_args
from skyrec.pipelines.runners import options_to_args, runner_options


def test_each_runner_gets_its_pinned_settings(config_factory) -> None:
    cfg = config_factory({"precompute": {"runner": "FlinkRunner"},
                          "jobs": {"flink": {"rest_url": "http://jm:8081", "parallelism": 6,
                                             "environment_config": "registry/beam_sdk:2.77.0"}}})
    args = pipeline_args(cfg, "preds")
    assert args[:2] == ["--runner=FlinkRunner", "--job_name=preds"]
    assert {"--flink_master=jm:8081", "--parallelism=6", "--environment_type=DOCKER",
            "--environment_config=registry/beam_sdk:2.77.0", "--flink_submit_uber_jar"} <= set(args)

    cfg = config_factory({"precompute": {"runner": "SparkRunner"},
                          "jobs": {"spark": {"master_url": "spark://m:7077"}}})
    assert "--spark_master_url=spark://m:7077" in pipeline_args(cfg, "preds")

    cfg = config_factory({"precompute": {"runner": "DataflowRunner"},
                          "jobs": {"dataflow": {"project": "p1", "shuffle_mode": "appliance",
                                                "experiments": ["use_runner_v2"]}}})
    args = pipeline_args(cfg, "preds")
    assert {"--project=p1", "--worker_machine_type=n2-highmem-4", "--experiments=use_runner_v2",
            "--experiments=shuffle_mode=appliance"} <= set(args)
    assert any(a.startswith("--temp_location=") for a in args)
    with pytest.raises(ConfigError, match="jobs.dataflow.project"):
        pipeline_args(config_factory({"precompute": {"runner": "DataflowRunner"}}), "preds")


def test_options_to_args_follows_beams_command_line_forms(config_factory) -> None:
    assert options_to_args({"a": True, "b": False, "c": [1, 2], "d": {"k": "v"}, "e": None, "f": 3}) == [
        "--a", "--c=1", "--c=2", "--d=k=v", "--f=3"]
    assert runner_options(config_factory(), "DirectRunner") == {}


def test_the_local_runner_is_beams_python_runner_and_never_prism(config_factory, monkeypatch) -> None:
    """Config's DirectRunner runs in process on Beam's Python runner. Beam's own DirectRunner name would
    first try Prism -- download its binary from GitHub while the job runs and start it as a job server --
    which the jobs here must never do; the attempt is recorded (and refused) to show it does not happen."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability import prism_runner
    from apache_beam.testing.util import assert_that, equal_to

    from skyrec.pipelines.activity import pipeline_options

    tried: list[str] = []

    def refuse(self, pipeline, options):  # type: ignore[no-untyped-def]
        tried.append("prism")
        raise RuntimeError("Prism is not for skyrec's local jobs")

    monkeypatch.setattr(prism_runner.PrismRunner, "run_pipeline", refuse)
    config = config_factory()
    for options in (pipeline_options(config, job_name="activity"),
                    PipelineOptions(pipeline_args(config, "predictions"))):
        assert options.get_all_options()["runner"] == "FnApiRunner"
        p = beam.Pipeline(options=options)
        grouped = (p | beam.Create([("a", 1), ("a", 2), ("b", 3)]) | beam.GroupByKey()
                   | beam.MapTuple(lambda k, v: (k, sorted(v))))
        assert_that(grouped, equal_to([("a", [1, 2]), ("b", [3])]))
        p.run().wait_until_finish()
    assert tried == []
