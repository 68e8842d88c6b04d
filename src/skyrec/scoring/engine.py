"""The precompute engine: one implementation of "score a range of users and write their outputs".

``PrecomputeSpec`` is a small JSON-able description of a run (where the model, catalogue and availability
are, the rules, where to write). ``Scorer.from_spec`` loads the model and builds the candidates once (per
process, or per Beam worker in ``DoFn.setup``); ``Scorer.run_shard`` scores one range of users in batches
of ``batch_size`` with the kernel and writes, for that shard:

- ``parquet/part-NNNNN.parquet`` (schema PREDICTIONS), for analysis;
- ``resp/part-NNNNN.resp``: one ``SET {p}:rec:{variant}:{pub}:{user} <list>`` per user with a result (users
  with none get no key: the API falls back), the list in the spec's ``encoding`` (``skyrec.publish.codec``:
  ``json`` ``[[item, score], ...]`` or ``packed`` candidate positions + quantised scores), then, when ``history_items > 0`` and an
  activity snapshot is given, one ``SET {p}:hist:{variant}:{pub}:{user} [[item, ts], ...]`` per user of the
  shard with plays (``skyrec.scoring.history``).

Both the local engine and the Beam pipeline call ``run_shard``; the pipeline only distributes the shards.
Memory is bounded by the batch: one ``sub_batch x candidates`` score matrix per thread plus one batch of
output rows.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from skyrec.data.schemas import PREDICTIONS
from skyrec.publish.codec import check_encoding, encode_packed_sets
from skyrec.publish.keys import VALID_USER_ID, Keys
from skyrec.publish.resp import encode_rec_sets, fixed_width_fragments
from skyrec.scoring.candidates import Candidates, build_candidates
from skyrec.scoring.topk import TopK, topk_threaded
from skyrec.storage import Lake

# dictionary + RLE for the ids (user_id repeats k times), byte-stream-split for the float scores and delta
# for the ranks: ~2x faster to write and ~30% smaller than plain dictionary + zstd on every column
PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "compression_level": 1, "use_dictionary": ["user_id", "item_id"],
                                   "column_encoding": {"score": "BYTE_STREAM_SPLIT", "rank": "DELTA_BINARY_PACKED"}}


@dataclass
class PrecomputeSpec:
    """Everything a worker needs to score shards, JSON-able (Beam ships it to workers)."""

    variant: str
    publication: str
    lake_url: str
    model_path: str
    catalogue_path: str
    out_dir: str  # full fsspec path of the staging folder the shards are written into
    at: str  # ISO-8601 precompute time: availability and age rules are evaluated at this instant
    candidate_filter: dict[str, list[str]] = field(default_factory=dict)
    availability_path: str | None = None
    storage_options: dict[str, Any] = field(default_factory=dict)
    key_prefix: str = "skyrec"
    k: int = 50
    max_per_brand: int | None = None
    max_age_days: dict[str, float] = field(default_factory=dict)
    batch_size: int = 4096
    sub_batch: int = 64
    threads: int = 1
    score_decimals: int = 5
    activity_path: str | None = None  # committed activity snapshot the recent plays are read from
    history_items: int = 0  # plays per user in the publication's history keys (0: none)
    encoding: str = "json"  # rec values: json | packed (positions into the candidates, the item table)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PrecomputeSpec:
        return cls(**json.loads(text))


def read_table(lake: Lake, path: str) -> pa.Table:
    """All data Parquet files of a committed output, concatenated (quarantine excluded)."""
    manifest = lake.require(path)
    tables = []
    for f in manifest.files:
        name = f.path.rsplit("/", 1)[-1]
        if name.endswith(".parquet") and "/_quarantine/" not in f"/{f.path}":
            with lake.fs.open(lake.abspath(f"{manifest.path}/{f.path}"), "rb") as fh:
                tables.append(pq.read_table(fh))
    if not tables:
        raise ValueError(f"{path}: committed output holds no Parquet file")
    return pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]


def published_evaluation(lake: Lake, model_path: str, model_meta: dict[str, Any], variant: str,
                         fallback: dict[str, Any] | None = None) -> dict[str, Any]:
    """The evaluation figures the publication carries: those the publish step recorded in the model
    pointer (a committed model output is never modified, so its own manifest has none), when the pointer
    still names this model output; ``rules`` narrowed to this variant's rail."""
    from skyrec.models.artefact import published_model_pointer

    evaluation = dict(fallback or {})
    model, version = model_meta.get("model"), model_meta.get("version")
    if model and version:
        ptr = lake.read_pointer(published_model_pointer(str(model), str(version))) or {}
        if ptr.get("path") == model_path and isinstance(ptr.get("evaluation"), dict):
            evaluation = dict(ptr["evaluation"])
    if isinstance(evaluation.get("rules"), dict):
        evaluation["rules"] = evaluation["rules"].get(variant) or {}
    return evaluation


@dataclass
class ShardResult:
    shard: int
    users: int  # users scored in the shard
    rec_keys: int  # users with a result (one SET each)
    empty: int  # users with no eligible item (no key)
    rows: int  # Parquet rows
    parquet: str
    resp: str
    referenced: list[int]  # candidate positions referenced by any result
    sample_users: list[str]
    seconds: float
    hist_keys: int = 0  # users with a history key (one SET each, in the shard's RESP file)
    history_items: list[str] = field(default_factory=list)  # distinct items in those histories


    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Scorer:
    """The model and a variant's candidates, loaded once; scores shards of users."""

    def __init__(self, spec: PrecomputeSpec, *, lake: Lake, user_ids: np.ndarray, user_factors: Any,
                 seen: Any, candidates: Candidates, model_meta: dict[str, Any],
                 evaluation: dict[str, Any] | None = None) -> None:
        self.spec = spec
        self.lake = lake
        self.user_ids = pa.array(user_ids.tolist() if user_ids.dtype == object else user_ids, pa.string())
        self.valid = np.asarray(pc.match_substring_regex(self.user_ids, VALID_USER_ID.pattern)
                                .fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
        self.user_factors = user_factors
        self.seen = seen
        self.candidates = candidates
        self.model_meta = model_meta
        self.evaluation = evaluation or {}
        self.cand_ids = pa.array(candidates.item_ids.tolist(), pa.string())
        self.encoding = check_encoding(spec.encoding)
        self.fragments = fixed_width_fragments(candidates.item_ids.tolist()) if self.encoding == "json" else None
        self.rec_prefix = Keys(spec.key_prefix).rec(spec.variant, spec.publication, "")
        self.hist_prefix = Keys(spec.key_prefix).hist(Keys.hist_namespace(spec.variant, spec.publication), "")
        self._pool = ThreadPoolExecutor(spec.threads) if spec.threads > 1 else None

    @classmethod
    def from_spec(cls, spec: PrecomputeSpec) -> Scorer:
        from skyrec.models.artefact import load_artefact

        lake = Lake(spec.lake_url, spec.storage_options)
        art = load_artefact(lake, lake.require(spec.model_path))
        catalogue = read_table(lake, spec.catalogue_path)
        availability = read_table(lake, spec.availability_path) if spec.availability_path else None
        at = dt.datetime.fromisoformat(spec.at)
        cands = build_candidates(model_item_ids=art.item_ids, item_factors=art.item_factors, catalogue=catalogue,
                                 candidate_filter=spec.candidate_filter, at=at, availability=availability,
                                 max_age_days=spec.max_age_days)
        return cls(spec, lake=lake, user_ids=art.user_ids, user_factors=art.user_factors, seen=art.seen,
                   candidates=cands, model_meta=dict(art.meta),
                   evaluation=published_evaluation(lake, spec.model_path, art.meta, spec.variant, art.evaluation))

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    def invalid_users(self) -> list[str]:
        return [self.user_ids[int(i)].as_py() for i in np.nonzero(~self.valid)[0]]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    # ---- scoring ------------------------------------------------------------------------------
    def score(self, rows: np.ndarray) -> TopK:
        """The exact constrained top-K of the given user rows (the kernel, threaded over the rows)."""
        c = self.candidates
        k = min(self.spec.k, max(1, len(c)))
        return topk_threaded(self.user_factors[rows], c.item_factors_t, k, pool=self._pool, threads=self.spec.threads,
                             exclude=c.exclusions(self.seen, rows), brands=c.brands,
                             max_per_brand=self.spec.max_per_brand, sub_batch=self.spec.sub_batch)

    def _outputs(self, rows: np.ndarray, res: TopK) -> tuple[pa.Table, bytes, np.ndarray]:
        k = res.items.shape[1]
        mask = np.arange(k)[None, :] < res.counts[:, None]
        cand = res.items[mask]
        scores = res.scores[mask]
        user_rep = np.repeat(rows, res.counts)
        ranks = np.broadcast_to(np.arange(1, k + 1, dtype=np.int16), res.items.shape)[mask]
        table = pa.Table.from_arrays(
            [self.user_ids.take(pa.array(user_rep)), pa.array(ranks, pa.int16()), self.cand_ids.take(pa.array(cand)),
             pa.array(scores, pa.float32())], schema=PREDICTIONS)
        batch_users = self.user_ids.take(pa.array(rows)).to_pylist()
        if self.fragments is None:  # packed: the item table is the candidates in their order
            resp, _ = encode_packed_sets(self.rec_prefix, batch_users, res.items, res.scores, res.counts,
                                         self.spec.score_decimals, len(self.candidates))
        else:
            resp, _ = encode_rec_sets(self.rec_prefix, batch_users, self.fragments, res.items, res.scores,
                                      res.counts, self.spec.score_decimals)
        return table, resp, cand

    def run_shard(self, shard: int, start: int, end: int) -> ShardResult:
        """Score users [start, end) in batches; write the shard's Parquet and RESP files."""
        t0 = time.perf_counter()
        spec = self.spec
        fs = self.lake.fs
        pq_name, resp_name = f"parquet/part-{shard:05d}.parquet", f"resp/part-{shard:05d}.resp"
        for name in (pq_name, resp_name):
            fs.makedirs(f"{spec.out_dir}/{name}".rsplit("/", 1)[0], exist_ok=True)
        stats = {"users": 0, "rec_keys": 0, "rows": 0}
        referenced = np.zeros(len(self.candidates), dtype=bool)
        sample: list[str] = []
        with fs.open(f"{spec.out_dir}/{pq_name}", "wb") as pfh, fs.open(f"{spec.out_dir}/{resp_name}", "wb") as rfh, \
                ThreadPoolExecutor(1, thread_name_prefix="skyrec-shard-writer") as out_pool:
            writer = pq.ParquetWriter(pfh, PREDICTIONS, **PARQUET_OPTIONS)

            def emit(rows: np.ndarray, res: TopK) -> None:
                """Format and write one batch (runs while the next batch is being scored)."""
                table, resp, cand = self._outputs(rows, res)
                writer.write_table(table)
                rfh.write(resp)
                referenced[cand] = True
                stats["users"] += rows.size
                stats["rec_keys"] += int((res.counts > 0).sum())
                stats["rows"] += table.num_rows
                if len(sample) < 64:
                    with_rec = rows[res.counts > 0]
                    sample.extend(self.user_ids[int(r)].as_py() for r in with_rec[:: max(1, with_rec.size // 8)][:8])

            pending = None
            try:
                for s in range(start, end, spec.batch_size):
                    rows = np.arange(s, min(end, s + spec.batch_size))
                    rows = rows[self.valid[rows]]
                    if rows.size == 0:
                        continue
                    res = self.score(rows)
                    if pending is not None:
                        pending.result()  # at most one batch in flight: memory stays bounded by the batch
                    pending = out_pool.submit(emit, rows, res)
                if pending is not None:
                    pending.result()
            finally:
                writer.close()
            hist_keys, hist_items = self._write_history(start, end, rfh)
        users, rec_keys, rows_out = stats["users"], stats["rec_keys"], stats["rows"]
        return ShardResult(shard=shard, users=users, rec_keys=rec_keys, empty=users - rec_keys, rows=rows_out,
                           parquet=pq_name, resp=resp_name, referenced=np.nonzero(referenced)[0].tolist(),
                           sample_users=sample[:64], seconds=round(time.perf_counter() - t0, 3),
                           hist_keys=hist_keys, history_items=hist_items)

    def _write_history(self, start: int, end: int, out: Any) -> tuple[int, list[str]]:
        """Append the shard's users' recent plays (valid user ids only) to its RESP file."""
        spec = self.spec
        if spec.history_items <= 0 or not spec.activity_path or end <= start:
            return 0, []
        from skyrec.scoring.history import encode_history_sets, read_shard_plays

        rows = np.arange(start, end)
        rows = rows[self.valid[rows]]
        plays = read_shard_plays(self.lake, spec.activity_path, self.user_ids.take(pa.array(rows)),
                                 spec.history_items)
        data, n, items = encode_history_sets(self.hist_prefix, plays)
        out.write(data)
        return n, items


def shard_ranges(n_users: int, shard_users: int) -> list[tuple[int, int, int]]:
    """(shard, start, end) covering [0, n_users) in shards of ``shard_users``."""
    step = max(1, shard_users)
    return [(i, s, min(n_users, s + step)) for i, s in enumerate(range(0, n_users, step))] or [(0, 0, 0)]


def default_threads(configured: int) -> int:
    return configured if configured > 0 else max(1, os.cpu_count() or 1)
