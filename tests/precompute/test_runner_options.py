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
