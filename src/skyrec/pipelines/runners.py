"""Pinned runner settings from config, in one place: the Beam pipelines (run with ``precompute.runner`` or
``jobs.backend``) and the Beam job backends (which launch them) take the same options for the same config.

``runner_options(config, runner)`` gives the settings a runner must run with -- ``jobs.dataflow`` (project,
region, machine type, disk, workers, experiments incl. the shuffle mode, temp and staging locations),
``jobs.flink`` (master, parallelism, SDK harness environment, uber-jar submission), ``jobs.spark`` (master,
SDK harness environment) or ``precompute.dask`` (scheduler address, connection timeout, partitions) --
without the job's name or identity, which the caller adds.

DaskRunner is the self-hosted scale-out: Beam's Dask runner (``apache-beam[dask]``) translates the pipeline
into a Dask graph that the cluster's scheduler spreads over its worker processes (``dask scheduler`` and
``dask worker`` over TCP; no job server, no container). Beam knows it by its module path only
(:data:`DASK_RUNNER`); config and docs call it ``DaskRunner``.

``DirectRunner`` in skyrec's config is Beam's in-process Python runner, named :data:`LOCAL_RUNNER`
(``FnApiRunner``) to Beam. Beam's own ``DirectRunner`` name first tries the Prism runner: it downloads a Go
binary from GitHub while the job runs, starts it as a job server (leaving a ``beam-temp*`` folder in the
temporary directory each time) and runs the pipeline there, falling back to the Python runner only when that
fails. A job that fetches and runs an executable from the internet, on a runner its tests never used (they
run where the fetch fails), is not the embedded default skyrec ships: it names the Python runner directly.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from skyrec.config import Config, ConfigError

RUNNERS = {"dataflow": "DataflowRunner", "flink": "FlinkRunner", "spark": "SparkRunner"}
DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
LOCAL_RUNNER = "FnApiRunner"  # what config's DirectRunner runs on: in process, never Prism (above)


def beam_runner(runner: str) -> str:
    """The name Beam resolves for a configured runner (``DaskRunner`` is not registered by short name;
    ``DirectRunner`` is the Python runner, :data:`LOCAL_RUNNER`)."""
    return {"DaskRunner": DASK_RUNNER, "DirectRunner": LOCAL_RUNNER}.get(runner, runner)


def runner_options(config: Config, runner: str) -> dict[str, Any]:
    """The pinned options of ``runner`` (a Beam runner name); empty for runners without settings here."""
    jobs = config.jobs
    if runner == "DataflowRunner":
        df = jobs.dataflow
        if not df.project:
            raise ConfigError("jobs.dataflow.project: required to run on Dataflow")
        lake = config.lake_url.rstrip("/")
        return {"project": df.project, "region": df.region, "worker_machine_type": df.machine_type,
                "disk_size_gb": df.disk_size_gb, "max_num_workers": df.max_workers,
                "experiments": [*df.experiments, f"shuffle_mode={df.shuffle_mode}"],
                "temp_location": f"{lake}/_beam/temp", "staging_location": f"{lake}/_beam/staging"}
    if runner == "FlinkRunner":
        fl = jobs.flink
        master = fl.master or urllib.parse.urlsplit(fl.rest_url).netloc or fl.rest_url
        return {"flink_master": master, "parallelism": fl.parallelism, "environment_type": fl.environment_type,
                "environment_config": fl.environment_config, "flink_submit_uber_jar": fl.submit_uber_jar}
    if runner == "SparkRunner":
        sp = jobs.spark
        return {"spark_master_url": sp.master_url, "environment_type": sp.environment_type,
                "environment_config": sp.environment_config}
    if runner in ("DaskRunner", DASK_RUNNER):
        dk = config.precompute.dask
        if not dk.address:
            raise ConfigError("precompute.dask.address: required to run on a Dask cluster (tcp://host:8786)")
        return {"dask_client_address": dk.address, "dask_connection_timeout": dk.connection_timeout_seconds,
                "dask_npartitions": dk.partitions or None}
    return {}


def options_to_args(options: dict[str, Any]) -> list[str]:
    """Command-line form of pipeline options, as Beam parses them: ``True`` is a bare flag (``False`` left
    out), a list repeats the option, a dict repeats it as ``key=value``."""
    args: list[str] = []
    for name, value in options.items():
        if isinstance(value, bool):
            args += [f"--{name}"] if value else []
        elif isinstance(value, list | tuple):
            args += [f"--{name}={v}" for v in value]
        elif isinstance(value, dict):
            args += [f"--{name}={k}={v}" for k, v in value.items()]
        elif value is not None:
            args.append(f"--{name}={value}")
    return args
