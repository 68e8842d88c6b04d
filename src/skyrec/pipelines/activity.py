"""Apache Beam pipeline of the activity ingest: hourly raw Parquet -> one filtered delta per interval.

Shape (works on Arrow tables, never per record)::

    Create[(interval_key, file)] -> ParDo(ReadAndFilter) -> GroupByKey(interval) -> ParDo(FinishInterval)

- ``ReadAndFilter`` reads one whole file (a truncated/corrupt file is quarantined as a whole:
  ``corrupt_file``; schema drift: ``missing_column_<name>`` / ``bad_column_type_<name>``, every row of the
  file quarantined under that reason; extra columns are tolerated and reported), then applies the
  vectorised rules of ``skyrec.data.activity`` batch by batch. Replayed inputs (``Spec.replay_files``,
  fixed records an operator put back, in the lake) are read the same way and replace the original rows
  with the same event ids.
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
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from skyrec.data.activity import (
    KEPT,
    REPLACED,
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
    replay_files: list[str] = field(default_factory=list)  # full lake paths of replayed (fixed) inputs

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
    return ActivityRules.from_dict(spec.rules)


class ReadAndFilter(beam.DoFn):
    """(interval_key, file path) -> (interval_key, per-file result dict).

    A file that cannot be read is quarantined whole (``corrupt_file``; its rows counted when the Parquet
    footer still says how many, else the file counts with its size). A file whose schema cannot be read as
    RAW_ACTIVITY is quarantined whole too: every one of its rows, under the reason naming the column.
    """

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.rows_in = Metrics.counter(NAMESPACE, "rows_in")
        self.files = Metrics.counter(NAMESPACE, "files")

    def setup(self) -> None:
        self._fs = _source_fs(self.spec)
        self._lake = _lake_fs(self.spec)
        self._rules = _rules(self.spec)
        self._known = None
        if self.spec.catalogue_file:
            with self._lake.open(self.spec.catalogue_file, "rb") as fh:
                self._known = pq.read_table(fh, columns=["item_id"]).column("item_id").combine_chunks()

    def process(self, element: tuple[str, str]) -> Any:
        interval, path = element
        self.files.inc()
        target = self.spec.intervals[interval]
        replay = path in self.spec.replay_files
        fs = self._lake if replay else self._fs
        out: dict[str, Any] = {"file": path, "replay": replay, "rows_in": 0, "bytes": None, "valid": None,
                               "quarantined": {}, "file_problem": None, "rejected": None, "extra_columns": []}
        try:
            out["bytes"] = int(fs.size(path))
        except Exception:  # noqa: BLE001 - the size only feeds an estimate; reading decides
            pass
        try:
            with fs.open(path, "rb") as fh:
                table = pq.read_table(fh)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is quarantined whole, the run goes on
            Metrics.counter(NAMESPACE, "corrupt_file").inc()
            out["file_problem"] = ("corrupt_file", f"{type(exc).__name__}: {exc}")
            out["rows_in"] = _footer_rows(fs, path)  # None: the file's rows cannot be counted
            yield interval, out
            return
        try:
            table, extra = conform(table)
        except SchemaProblem as exc:
            Metrics.counter(NAMESPACE, exc.reason).inc()
            out["file_problem"] = (exc.reason, str(exc))
            out["rows_in"] = table.num_rows
            out["rejected"] = table  # every row of the file is quarantined under the file's reason
            self.rows_in.inc(table.num_rows)
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
        out["valid"] = pa.concat_tables(valid) if valid else KEPT.empty_table()
        out["quarantined"] = {r: pa.concat_tables(ts) for r, ts in quarantined.items()}
        self.rows_in.inc(table.num_rows)
        yield interval, out


def _footer_rows(fs: Any, path: str) -> int | None:
    """Row count from the Parquet footer of a file whose data could not be read (None: no footer either)."""
    try:
        with fs.open(path, "rb") as fh:
            return int(pq.ParquetFile(fh).metadata.num_rows)
    except Exception:  # noqa: BLE001 - unreadable footer: the rows cannot be counted
        return None


def _jsonl(table_or_rows: Any) -> bytes:
    rows = table_or_rows.to_pylist() if isinstance(table_or_rows, pa.Table) else table_or_rows
    return "".join(json.dumps(r, default=str, sort_keys=True) + "\n" for r in rows).encode()


def _event_ids(table: pa.Table | None) -> set[str]:
    if table is None or table.num_rows == 0 or "event_id" not in table.column_names:
        return set()
    col = table.column("event_id")
    if not pa.types.is_string(col.type):
        col = col.cast(pa.string(), safe=False) if pa.types.is_integer(col.type) else None
    return {v for v in col.to_pylist() if v is not None} if col is not None else set()


def _without(table: pa.Table, ids: set[str]) -> tuple[pa.Table, int]:
    """(rows of ``table`` whose event_id is not in ``ids``, number removed)."""
    if not ids or table.num_rows == 0 or "event_id" not in table.column_names \
            or not pa.types.is_string(table.column("event_id").type):
        return table, 0
    hit = pc.is_in(table.column("event_id"), value_set=pa.array(sorted(ids), pa.string())).fill_null(False)
    n = int(pc.sum(hit).as_py() or 0)
    return (table.filter(pc.invert(hit)), n) if n else (table, 0)


class FinishInterval(beam.DoFn):
    """(interval_key, [per-file results]) -> writes the interval's delta + quarantine; yields its summary.

    The summary accounts for every row and file read: ``rows_in = rows_out + sum(quarantined) +
    sum(filtered)`` (rows of readable files and of files rejected whole) and every file is either read
    or in ``bad_files``; files whose rows cannot be counted are listed in ``uncounted_files`` (bytes).
    """

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.duplicates = Metrics.counter(NAMESPACE, "duplicate_event")
        self.rows_out = Metrics.counter(NAMESPACE, "rows_out")

    def setup(self) -> None:
        self._fs = _lake_fs(self.spec)

    def process(self, element: tuple[str, Any]) -> Any:
        from skyrec.data.lakeio import PARQUET_OPTIONS, ROW_GROUP

        interval, results = element
        results = sorted(results, key=lambda r: (r["replay"], r["file"]))
        target = self.spec.intervals[interval].target
        # a replayed (fixed) record replaces every original row with its event id: counted, not doubled
        replayed: set[str] = set()
        for r in results:
            if r["replay"]:
                replayed |= _event_ids(r["valid"]) | _event_ids(r["rejected"])
                for t in r["quarantined"].values():
                    replayed |= _event_ids(t)
        replaced = 0
        for r in results:
            if r["replay"] or not replayed:
                continue
            if r["valid"] is not None:
                r["valid"], n = _without(r["valid"], replayed)
                replaced += n
            for reason in list(r["quarantined"]):
                r["quarantined"][reason], n = _without(r["quarantined"][reason], replayed)
                replaced += n
            if r["rejected"] is not None:
                r["rejected"], n = _without(r["rejected"], replayed)
                replaced += n
        valid = [r["valid"] for r in results if r["valid"] is not None]
        table = pa.concat_tables(valid) if valid else KEPT.empty_table()
        unique, dups = dedupe(table)
        self.duplicates.inc(dups.num_rows)
        kept, filtered = apply_filters(unique)
        if replaced:
            filtered = dict(sorted({**filtered, REPLACED: replaced}.items()))
        for reason, n in filtered.items():
            Metrics.counter(NAMESPACE, reason).inc(n)
        delta = finalise(kept)
        self.rows_out.inc(delta.num_rows)
        quarantine: dict[str, list[Any]] = {}  # reason -> quarantine lines (rows; one line per unreadable file)
        rows_quarantined: dict[str, int] = {}
        for r in results:
            for reason, t in r["quarantined"].items():
                if t.num_rows:
                    quarantine.setdefault(reason, []).extend(t.to_pylist())
                    rows_quarantined[reason] = rows_quarantined.get(reason, 0) + t.num_rows
            if r["file_problem"]:
                reason, message = r["file_problem"]
                if r["rejected"] is not None:
                    rows = r["rejected"].to_pylist()
                    for row in rows:
                        row["_file"] = r["file"]
                    quarantine.setdefault(reason, []).extend(rows)
                    rows_quarantined[reason] = rows_quarantined.get(reason, 0) + len(rows)
                    if not rows:  # a rejected file without rows still leaves a trace
                        quarantine.setdefault(reason, []).append({"file": r["file"], "error": message, "rows": 0})
                else:
                    quarantine.setdefault(reason, []).append({"file": r["file"], "error": message,
                                                              "rows": r["rows_in"], "bytes": r["bytes"]})
                    if r["rows_in"]:
                        rows_quarantined[reason] = rows_quarantined.get(reason, 0) + r["rows_in"]
        if dups.num_rows:
            quarantine["duplicate_event"] = dups.drop_columns(["drop"]).to_pylist()
            rows_quarantined["duplicate_event"] = dups.num_rows
        self._fs.makedirs(target, exist_ok=True)
        with self._fs.open(f"{target}/{DELTA_FILE}", "wb") as fh:
            pq.write_table(delta, fh, row_group_size=ROW_GROUP, **PARQUET_OPTIONS)
        for reason, rows in sorted(quarantine.items()):
            self._fs.makedirs(f"{target}/_quarantine", exist_ok=True)
            with self._fs.open(f"{target}/_quarantine/{reason}.jsonl", "wb") as fh:
                fh.write(_jsonl(rows))
        counted = [r for r in results if r["rows_in"] is not None]
        summary = {
            "interval": interval, "files": [r["file"] for r in results],
            "replay_files": [r["file"] for r in results if r["replay"]],
            "rows_in": sum(r["rows_in"] for r in counted),
            "rows_out": delta.num_rows, "bad_rows": sum(rows_quarantined.values()),
            "quarantined": dict(sorted(rows_quarantined.items())), "filtered": filtered,
            "quarantine_lines": {k: len(v) for k, v in sorted(quarantine.items())},
            "bad_files": {r["file"]: r["file_problem"][0] for r in results if r["file_problem"]},
            "uncounted_files": {r["file"]: r["bytes"] for r in results if r["rows_in"] is None},
            "counted_bytes": sum(r["bytes"] or 0 for r in counted),
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
    from skyrec.pipelines.runners import LOCAL_RUNNER, RUNNERS, options_to_args, runner_options

    launched = launcher_options()
    if launched is not None:  # started by a Beam backend (Dataflow, Flink, Spark): its pinned options
        return PipelineOptions(launched)
    runner = RUNNERS.get(config.jobs.backend)
    if runner is None:
        return PipelineOptions([f"--runner={LOCAL_RUNNER}", "--direct_num_workers=1",
                                "--direct_running_mode=in_memory"])  # config's DirectRunner: runners.py
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
    try:
        result.wait_until_finish()
    finally:
        client = getattr(result, "client", None)
        if client is not None:  # DaskRunner leaves its cluster client open (and reports no metrics)
            client.close()
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
    from skyrec.pipelines.runners import LOCAL_RUNNER

    return execute(spec, files, PipelineOptions(beam_args or [f"--runner={LOCAL_RUNNER}"]))


if __name__ == "__main__":
    print(json.dumps(run()))
