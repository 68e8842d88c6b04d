"""Apache Beam pipeline of the activity ingest: hourly raw Parquet -> one filtered delta per interval.

Shape (works on Arrow tables, never per record)::

    Create[(interval_key, file)] -> ParDo(ReadAndFilter) -> GroupByKey(interval) -> ParDo(FinishInterval)

- ``ReadAndFilter`` reads one whole file (a truncated/corrupt file is quarantined as a whole:
  ``corrupt_file``; schema drift: ``missing_column_<name>`` / ``bad_column_type_<name>``; extra columns
  are tolerated and reported), then applies the vectorised rules of ``skyrec.data.activity`` batch by
  batch.
- ``FinishInterval`` de-duplicates event ids across the interval's files, sorts, and writes into the
  interval's staging folder (given by the driver): ``part-00000.parquet`` (schema ACTIVITY),
  ``_quarantine/<reason>.jsonl`` and ``_summary.json`` (counts the driver puts into the manifest).
  The driver (``skyrec.jobs.ingest_activity``) commits; the pipeline never commits.

Counts go to Beam ``Metrics.counter`` (namespace ``skyrec.activity``) as well. The runner comes from
config: DirectRunner locally, DataflowRunner with the pinned ``jobs.dataflow`` settings when
``jobs.backend == "dataflow"``. ``run(argv)`` is the command-line entry point (``--spec FILE``).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from skyrec.data.activity import (
    ActivityRules,
    SchemaProblem,
    apply_filters,
    conform,
    dedupe,
    filter_activity,
    finalise,
)

NAMESPACE = "skyrec.activity"
BATCH_ROWS = 1 << 20
DELTA_FILE = "part-00000.parquet"
SUMMARY_FILE = "_summary.json"


@dataclass(frozen=True)
class IntervalTarget:
    start: str  # ISO, UTC
    end: str
    target: str  # full path (in the lake filesystem) of the staging folder to write into


@dataclass(frozen=True)
class Spec:
    """Everything the workers need, as plain values (picklable, JSON-able for ``run(argv)``)."""

    source_kind: str
    source_options: dict[str, Any]
    lake_url: str
    lake_options: dict[str, Any]
    catalogue_file: str | None  # full lake path of catalogue.parquet (None: no item check)
    rules: dict[str, Any]
    intervals: dict[str, IntervalTarget] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Spec:
        raw = json.loads(text)
        raw["intervals"] = {k: IntervalTarget(**v) for k, v in raw["intervals"].items()}
        return cls(**raw)


def _source_fs(spec: Spec) -> Any:
    import fsspec

    return fsspec.filesystem("s3" if spec.source_kind == "s3" else "file", **spec.source_options)


def _lake_fs(spec: Spec) -> Any:
    import fsspec

    fs, _ = fsspec.core.url_to_fs(spec.lake_url, **spec.lake_options)
    return fs


def _rules(spec: Spec) -> ActivityRules:
    r = spec.rules
    return ActivityRules(tuple(r["event_types"]), float(r["min_play_seconds"]), float(r["future_tolerance_minutes"]),
                         int(r["past_limit_days"]))


class ReadAndFilter(beam.DoFn):
    """(interval_key, file path) -> (interval_key, per-file result dict)."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.rows_in = Metrics.counter(NAMESPACE, "rows_in")
        self.files = Metrics.counter(NAMESPACE, "files")

    def setup(self) -> None:
        self._fs = _source_fs(self.spec)
        self._rules = _rules(self.spec)
        self._known = None
        if self.spec.catalogue_file:
            with _lake_fs(self.spec).open(self.spec.catalogue_file, "rb") as fh:
                self._known = pq.read_table(fh, columns=["item_id"]).column("item_id").combine_chunks()

    def process(self, element: tuple[str, str]) -> Any:
        interval, path = element
        self.files.inc()
        target = self.spec.intervals[interval]
        out: dict[str, Any] = {"file": path, "rows_in": 0, "valid": None, "quarantined": {},
                               "file_problem": None, "extra_columns": []}
        try:
            with self._fs.open(path, "rb") as fh:
                table = pq.read_table(fh)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is quarantined whole, the run goes on
            Metrics.counter(NAMESPACE, "corrupt_file").inc()
            out["file_problem"] = ("corrupt_file", f"{type(exc).__name__}: {exc}")
            yield interval, out
            return
        try:
            table, extra = conform(table)
        except SchemaProblem as exc:
            Metrics.counter(NAMESPACE, exc.reason).inc()
            out["file_problem"] = (exc.reason, str(exc))
            out["rows_in"] = table.num_rows
            yield interval, out
            return
        out["extra_columns"] = extra
        start, end = dt.datetime.fromisoformat(target.start), dt.datetime.fromisoformat(target.end)
        valid: list[pa.Table] = []
        quarantined: dict[str, list[pa.Table]] = {}
        for batch in table.to_batches(max_chunksize=BATCH_ROWS):
            res = filter_activity(pa.Table.from_batches([batch], schema=table.schema), rules=self._rules,
                                  known_items=self._known, start=start, end=end)
            valid.append(res.valid)
            for reason, t in res.quarantined.items():
                quarantined.setdefault(reason, []).append(t)
                Metrics.counter(NAMESPACE, reason).inc(t.num_rows)
        out["rows_in"] = table.num_rows
        out["valid"] = pa.concat_tables(valid) if valid else None
        out["quarantined"] = {r: pa.concat_tables(ts) for r, ts in quarantined.items()}
        self.rows_in.inc(table.num_rows)
        yield interval, out


def _jsonl(table_or_rows: Any) -> bytes:
    rows = table_or_rows.to_pylist() if isinstance(table_or_rows, pa.Table) else table_or_rows
    return "".join(json.dumps(r, default=str, sort_keys=True) + "\n" for r in rows).encode()


class FinishInterval(beam.DoFn):
    """(interval_key, [per-file results]) -> writes the interval's delta + quarantine; yields its summary."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.duplicates = Metrics.counter(NAMESPACE, "duplicate_event")
        self.rows_out = Metrics.counter(NAMESPACE, "rows_out")

    def setup(self) -> None:
        self._fs = _lake_fs(self.spec)

    def process(self, element: tuple[str, Any]) -> Any:
        from skyrec.data.activity import KEPT
        from skyrec.data.lakeio import PARQUET_OPTIONS, ROW_GROUP

        interval, results = element
        results = sorted(results, key=lambda r: r["file"])
        target = self.spec.intervals[interval].target
        valid = [r["valid"] for r in results if r["valid"] is not None]
        table = pa.concat_tables(valid) if valid else KEPT.empty_table()
        unique, dups = dedupe(table)
        self.duplicates.inc(dups.num_rows)
        kept, filtered = apply_filters(unique)
        for reason, n in filtered.items():
            Metrics.counter(NAMESPACE, reason).inc(n)
        delta = finalise(kept)
        self.rows_out.inc(delta.num_rows)
        quarantine: dict[str, list[Any]] = {}
        for r in results:
            for reason, t in r["quarantined"].items():
                quarantine.setdefault(reason, []).extend(t.to_pylist())
            if r["file_problem"]:
                reason, message = r["file_problem"]
                quarantine.setdefault(reason, []).append({"file": r["file"], "error": message})
        if dups.num_rows:
            quarantine["duplicate_event"] = dups.drop_columns(["drop"]).to_pylist()
        self._fs.makedirs(target, exist_ok=True)
        with self._fs.open(f"{target}/{DELTA_FILE}", "wb") as fh:
            pq.write_table(delta, fh, row_group_size=ROW_GROUP, **PARQUET_OPTIONS)
        for reason, rows in sorted(quarantine.items()):
            self._fs.makedirs(f"{target}/_quarantine", exist_ok=True)
            with self._fs.open(f"{target}/_quarantine/{reason}.jsonl", "wb") as fh:
                fh.write(_jsonl(rows))
        bad_rows = sum(len(v) for k, v in quarantine.items() if k in {
            "missing_field", "unknown_event_type", "future_ts", "too_old", "unknown_item", "duplicate_event"})
        summary = {
            "interval": interval, "files": [r["file"] for r in results],
            "rows_in": sum(r["rows_in"] for r in results), "rows_out": delta.num_rows, "bad_rows": bad_rows,
            "quarantined": {k: len(v) for k, v in sorted(quarantine.items())}, "filtered": filtered,
            "bad_files": {r["file"]: r["file_problem"][0] for r in results if r["file_problem"]},
            "extra_columns": {r["file"]: r["extra_columns"] for r in results if r["extra_columns"]},
        }
        with self._fs.open(f"{target}/{SUMMARY_FILE}", "wb") as fh:
            fh.write(json.dumps(summary, sort_keys=True).encode())
        yield summary


class IngestActivity(beam.PTransform):
    """PCollection[(interval_key, file)] -> PCollection[summary dict per interval]."""

    def __init__(self, spec: Spec) -> None:
        super().__init__()
        self.spec = spec

    def expand(self, files: Any) -> Any:
        return (files
                | "ReadAndFilter" >> beam.ParDo(ReadAndFilter(self.spec))
                | "ByInterval" >> beam.GroupByKey()
                | "FinishInterval" >> beam.ParDo(FinishInterval(self.spec)))


def pipeline_options(config: Any, *, job_name: str) -> PipelineOptions:
    """The Beam launcher's options when a Beam backend started the job; else DirectRunner locally, or the
    runner of ``jobs.backend`` (dataflow, flink, spark) with its pinned settings."""
    import re

    from skyrec.config import ConfigError
    from skyrec.pipelines import launcher_options
    from skyrec.pipelines.runners import RUNNERS, options_to_args, runner_options

    launched = launcher_options()
    if launched is not None:  # started by a Beam backend (Dataflow, Flink, Spark): its pinned options
        return PipelineOptions(launched)
    runner = RUNNERS.get(config.jobs.backend)
    if runner is None:
        return PipelineOptions(["--runner=DirectRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory"])
    pinned = getattr(config.jobs, config.jobs.backend).sdk_version
    if beam.__version__ != pinned:
        raise ConfigError(f"jobs.{config.jobs.backend}.sdk_version: pinned {pinned!r} but apache-beam "
                          f"{beam.__version__} is installed")
    name = re.sub(r"[^a-z0-9-]+", "-", job_name.lower()).strip("-")[:63] or "skyrec-activity"
    options = {"runner": runner, "job_name": name, **runner_options(config, runner)}
    if runner == "DataflowRunner":
        options["labels"] = ["app=skyrec"]
    return PipelineOptions(options_to_args(options))


def execute(spec: Spec, files: list[tuple[str, str]], options: PipelineOptions) -> dict[str, int]:
    """Run the pipeline to completion; returns the Beam counters (name -> value)."""
    from apache_beam.metrics.metric import MetricsFilter

    pipeline = beam.Pipeline(options=options)
    _ = (pipeline
         | "Files" >> beam.Create(sorted(files))
         | "Ingest" >> IngestActivity(spec))
    result = pipeline.run()
    result.wait_until_finish()
    counters: dict[str, int] = {}
    try:
        for c in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
            counters[c.key.metric.name] = counters.get(c.key.metric.name, 0) + int(c.committed or c.attempted or 0)
    except Exception:  # noqa: BLE001 - metrics are informative; some runners do not report them
        pass
    return counters


def run(argv: list[str] | None = None) -> dict[str, int]:
    """Command-line entry point: ``python -m skyrec.pipelines.activity --spec spec.json --files files.json``."""
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True)
    ap.add_argument("--files", required=True, help="JSON list of [interval_key, path]")
    known, beam_args = ap.parse_known_args(argv)
    with open(known.spec) as fh:
        spec = Spec.from_json(fh.read())
    with open(known.files) as fh:
        files = [tuple(x) for x in json.load(fh)]
    return execute(spec, files, PipelineOptions(beam_args or ["--runner=DirectRunner"]))


if __name__ == "__main__":
    print(json.dumps(run()))
