"""The precompute engine: one implementation of "score a range of users and write their outputs".

``PrecomputeSpec`` is a small JSON-able description of a run (where the model, catalogue and availability
are, the rules, where to write). ``Scorer.from_spec`` loads the model and builds the candidates once (per
process, or per Beam worker in ``DoFn.setup``); ``Scorer.run_shard`` scores one range of users in batches
of ``batch_size`` with the kernel and writes, for that shard:

- ``parquet/part-NNNNN.parquet`` (schema PREDICTIONS), for analysis;
- ``resp/part-NNNNN.resp``: one ``SET {p}:rec:{variant}:{pub}:{user} <list>`` per user with a result (users
  with none get no key: the API falls back), the list in the spec's ``encoding`` (``skyrec.publish.codec``:
  ``json`` ``[[item, score], ...]`` or ``packed`` candidate positions + quantised scores); with the "more like
  this" lists computed first (``similar_lists``) and a history, then one ``SET {p}:also:{variant}:{pub}:{user}``
  per user whose older plays are in the lists of their recent plays (in the spec's encoding too: item ids, or
  their candidate positions);
- ``hist/part-NNNNN.resp``, when ``history_items > 0`` and an activity snapshot is given: one
  ``SET {p}:hist:{namespace}:{user} [[item, ts], ...]`` per user of the shard with plays
  (``skyrec.scoring.history``), in the namespace the rails of that snapshot share
  (``spec.history_namespace``): the same bytes from every rail with the same users, loaded once.

With ``similar_k > 0`` the same kernel also scores *items*: ``Scorer.run_similar_shard`` takes a range of the
model's items as seeds (each seed on the user side through the model contract's ``item_queries``, the seed
itself excluded like a played item, the same candidates and brand cap) and writes
``sim/part-NNNNN.resp``: one ``SET {p}:sim:{variant}:{pub}:{item} <list>`` per seed with a result, in the
same encoding (and item table) as the ``rec`` values.

Both the local engine and the Beam pipeline call ``run_shard``; the pipeline only distributes the shards.
Memory is bounded by the batch: one ``sub_batch x candidates`` score matrix per thread plus one batch of
output rows. A batch's outputs are written on a writer thread while the next batch is scored (at most one
batch in flight), and cheaply, so the writer takes little from the kernel's cores: the Parquet id columns
go in dictionary-encoded (positions into the batch's users and the candidates), packed ``SET`` commands
come from one compiled pass over the batch (``encode_packed_rec_sets``, no per-user Python).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp

from skyrec.data.schemas import PREDICTIONS
from skyrec.models.representations import transposed
from skyrec.publish.codec import check_encoding
from skyrec.publish.keys import VALID_USER_ID, Keys
from skyrec.publish.resp import encode_packed_rec_sets, encode_rec_sets, fixed_width_fragments
from skyrec.scoring.candidates import Candidates, build_candidates
from skyrec.scoring.topk import TopK, topk_threaded
from skyrec.storage import CorruptPointer, Lake

# dictionary + RLE for the ids (user_id repeats k times), byte-stream-split for the float scores and delta
# for the ranks: ~2x faster to write and ~30% smaller than plain dictionary + zstd on every column
PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "compression_level": 1, "use_dictionary": ["user_id", "item_id"],
                                   "column_encoding": {"score": "BYTE_STREAM_SPLIT", "rank": "DELTA_BINARY_PACKED"}}
# The id columns are handed to the writer already dictionary-encoded (the batch's users, the candidates, and
# positions into them: no string is copied or hashed per row). The Arrow schema is not stored, so readers get
# the file's Parquet types, which are PREDICTIONS' (string, int16, string, float32), not dictionary types.
# No min/max statistics for item_id (random within a row group, so useless for pruning, and the costliest
# part of writing: ~half the writer's time); user_id's are kept (a reader looking for users skips row groups).
_WRITE_SCHEMA = pa.schema([pa.field("user_id", pa.dictionary(pa.int32(), pa.string())), PREDICTIONS.field("rank"),
                           pa.field("item_id", pa.dictionary(pa.int32(), pa.string())), PREDICTIONS.field("score")])
PREDICTIONS_WRITER: dict[str, Any] = {**PARQUET_OPTIONS, "store_schema": False,
                                      "write_statistics": ["user_id", "rank", "score"]}


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
    # the shared history namespace the plays are written into (``Keys.shared_hist_namespace``: one per activity
    # snapshot and ``history_items``); None: the publication's own ``<variant>:<pub>``
    history_namespace: str | None = None
    encoding: str = "json"  # rec values: json | packed (positions into the candidates, the item table)
    similar_k: int = 0  # items per "more like this" list (sim keys; 0: none)
    similar_measure: str = "dot"  # dot | cosine (models that do not list it use their own: dot)
    model_classes: list[str] | None = None  # configured model class paths (which model.json may name)
    users_sample: int = 64  # users with a list sampled for the publication's users set (precompute.users_sample)
    similar_lists: str | None = None  # file under out_dir holding the "more like this" lists as a matrix
    # (``Scorer.save_similar_lists``): with it, the histories name the older plays those lists hold

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PrecomputeSpec:
        return cls(**json.loads(text))


#: the file of a committed ``catalogue`` output that holds the catalogue; its other files are the entity
#: tables it was built from (brands, series, episodes, availability), which are not items
CATALOGUE_FILE = "catalogue.parquet"


def read_catalogue(lake: Lake, path: str) -> pa.Table:
    """The catalogue table of a committed ``catalogue`` output: one row per item (``CATALOGUE_FILE`` only)."""
    return read_table(lake, path, only=CATALOGUE_FILE)


def read_table(lake: Lake, path: str, *, only: str | None = None) -> pa.Table:
    """All data Parquet files of a committed output, concatenated (quarantine excluded); ``only``: just the
    file of that name (an error naming the output when it has none)."""
    manifest = lake.require(path)
    tables = []
    for f in manifest.files:
        name = f.path.rsplit("/", 1)[-1]
        if only is not None and name != only:
            continue
        if name.endswith(".parquet") and "/_quarantine/" not in f"/{f.path}":
            with lake.fs.open(lake.abspath(f"{manifest.path}/{f.path}"), "rb") as fh:
                tables.append(pq.read_table(fh))
    if not tables:
        raise ValueError(f"{path}: committed output holds no Parquet file" + (f" named {only}" if only else ""))
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
        try:
            ptr = lake.read_pointer(published_model_pointer(str(model), str(version))) or {}
        except CorruptPointer:  # the figures are shown, not decided on: those the artefact carries
            ptr = {}
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
    hist_keys: int = 0  # users with a history key (one SET each, in the shard's history file)
    hist: str | None = None  # the shard's history file (``hist/part-NNNNN.resp``; None: no history)
    history_items: list[str] = field(default_factory=list)  # distinct items in those histories
    also_played_users: int = 0  # users with an ``also`` key: older plays in their seeds' lists (``also_played``)
    also_played: int = 0  # those ids in all
    history_probes: dict[str, str] = field(default_factory=dict)  # a few users' history values (load post-condition)


    def as_dict(self) -> dict[str, Any]:
        return _fields(self)


@dataclass
class SimilarResult:
    shard: int
    seeds: int  # seed items scored (valid item ids of the model)
    sim_keys: int  # seeds with at least one similar item (one SET each)
    resp: str
    referenced: list[int]  # candidate positions referenced by any list
    seed_ids: list[str]  # the seeds with a key (their metadata goes into the items hash)
    probes: dict[str, list[list[Any]]]  # a few seeds' expected lists [[item, score], ...] (load post-condition)
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return _fields(self)


def _fields(result: Any) -> dict[str, Any]:
    """A shard result's fields as a dict, its lists shared, not deep-copied as ``asdict`` does (at 200k items
    a shard's referenced positions and seed ids are 200k elements each: ~0.35 s a copy, for nothing)."""
    return {f.name: getattr(result, f.name) for f in fields(result)}


class Scorer:
    """The model and a variant's candidates, loaded once; scores shards of users."""

    def __init__(self, spec: PrecomputeSpec, *, lake: Lake, user_ids: np.ndarray, user_factors: Any,
                 seen: Any, candidates: Candidates, model_meta: dict[str, Any],
                 evaluation: dict[str, Any] | None = None, item_ids: np.ndarray | None = None,
                 item_factors: np.ndarray | None = None, model_class: Any = None) -> None:
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
        keys = Keys(spec.key_prefix)
        self.hist_prefix = keys.hist(spec.history_namespace or Keys.hist_namespace(spec.variant, spec.publication), "")
        self.also_prefix = keys.also(spec.variant, spec.publication, "")
        self._pool = ThreadPoolExecutor(spec.threads) if spec.threads > 1 else None
        # item-to-item: the model's items as seeds, scored through the contract's ``item_queries``
        self.item_ids = np.asarray(item_ids if item_ids is not None else [], dtype=object)
        self.item_factors = item_factors
        self.model_class = model_class
        self.sim_prefix = Keys(spec.key_prefix).sim(spec.variant, spec.publication, "")
        self._sim_targets: Any = None
        self._sim_targets_t: Any = None
        self._sim_coo: list[tuple[np.ndarray, np.ndarray]] = []  # (seed rows, candidate positions) as scored
        self._sim_lists: sp.csr_matrix | None = None
        self._seed_ids_pa: pa.Array | None = None
        self._listed_pos: np.ndarray | None = None  # candidates some "more like this" list holds
        self._histories: Future[dict[int, tuple[pa.Table, sp.csr_matrix | None]]] | None = None
        self._history_pool: ThreadPoolExecutor | None = None

    @classmethod
    def from_spec(cls, spec: PrecomputeSpec) -> Scorer:
        from skyrec.models.artefact import load_artefact

        lake = Lake(spec.lake_url, spec.storage_options)
        art = load_artefact(lake, lake.require(spec.model_path))
        catalogue = read_catalogue(lake, spec.catalogue_path)
        availability = read_table(lake, spec.availability_path) if spec.availability_path else None
        at = dt.datetime.fromisoformat(spec.at)
        cands = build_candidates(model_item_ids=art.item_ids, item_factors=art.item_factors, catalogue=catalogue,
                                 candidate_filter=spec.candidate_filter, at=at, availability=availability,
                                 max_age_days=spec.max_age_days, tie_order=listeners(art.seen))
        model_class = None
        if spec.similar_k > 0:
            model_class = similar_model_class(lake, lake.require(spec.model_path), spec.model_classes)
        return cls(spec, lake=lake, user_ids=art.user_ids, user_factors=art.user_factors, seen=art.seen,
                   candidates=cands, model_meta=dict(art.meta),
                   evaluation=published_evaluation(lake, spec.model_path, art.meta, spec.variant, art.evaluation),
                   item_ids=art.item_ids, item_factors=art.item_factors, model_class=model_class)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    def invalid_users(self) -> list[str]:
        return [self.user_ids[int(i)].as_py() for i in np.nonzero(~self.valid)[0]]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        if self._history_pool is not None:
            self._history_pool.shutdown()
        self._histories = None

    def read_histories(self, shards: list[tuple[int, int, int]]) -> None:
        """One process scoring several shards (the local engine): start reading every shard's users' recent
        plays in one scan of the activity snapshot (in the background, while the first shard is scored), so
        that the shards take their part of it instead of each scanning the whole snapshot (a cost that grows
        as shards x snapshot rows: 14 scans of a 70M-row snapshot at 3.5M users). Memory: every user's last
        ``history_items`` plays, held until their shard is written. Nothing to do with one shard or no history."""
        spec = self.spec
        if spec.history_items <= 0 or not spec.activity_path or len(shards) < 2:
            return
        self._history_pool = ThreadPoolExecutor(1, thread_name_prefix="skyrec-history-scan")
        self._histories = self._history_pool.submit(self._split_histories, shards)

    def _split_histories(self, shards: list[tuple[int, int, int]]) -> dict[int, tuple[pa.Table, sp.csr_matrix | None]]:
        """Every valid user's recent plays (and listed items played) in one scan, split by shard: ``{start of the
        shard: (plays, played)}``, each as ``read_shard_plays`` gives them for that shard's users alone."""
        from skyrec.scoring.history import read_shard_plays

        rows = np.flatnonzero(self.valid)
        user_ids = self.user_ids.take(pa.array(rows))
        listed, _ = self._listed()
        assert self.spec.activity_path  # read_histories starts this only with one
        plays, played = read_shard_plays(self.lake, self.spec.activity_path, user_ids, self.spec.history_items,
                                         keep_items=listed)
        at = plays["row"].to_numpy()  # each play's user: a position in ``user_ids``
        starts = np.array([start for _, start, _ in shards], np.int64)
        shard_of = np.searchsorted(starts, rows[at], side="right") - 1  # plays are grouped by user: kept so
        order = np.argsort(shard_of, kind="stable")
        cuts = np.searchsorted(shard_of[order], np.arange(len(shards) + 1))
        out = {}
        for i, (_, start, end) in enumerate(shards):
            lo, hi = np.searchsorted(rows, [start, end])
            out[start] = (plays.take(pa.array(order[cuts[i]:cuts[i + 1]])),
                          played[lo:hi] if played is not None else None)
        return out

    def _listed(self) -> tuple[pa.Array | None, np.ndarray | None]:
        """The candidates some "more like this" list holds (ids, positions): only those can be "also played"
        (found once per scorer); (None, None) without lists."""
        lists = self.similar_lists()
        if lists is None:
            return None, None
        if self._listed_pos is None:
            self._listed_pos = np.flatnonzero(np.bincount(lists.indices, minlength=lists.shape[1]) > 0)
        return self.cand_ids.take(pa.array(self._listed_pos)), self._listed_pos

    # ---- scoring ------------------------------------------------------------------------------
    def batches(self, start: int, end: int) -> Iterator[np.ndarray]:
        """The valid user rows of ``[start, end)``, ``spec.batch_size`` rows of the range at a time (a batch
        whose rows are all invalid is skipped): the batches a shard is scored in."""
        for s in range(start, end, self.spec.batch_size):
            rows = np.arange(s, min(end, s + self.spec.batch_size))
            rows = rows[self.valid[rows]]
            if rows.size:
                yield rows

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
        ranks = np.broadcast_to(np.arange(1, k + 1, dtype=np.int16), res.items.shape)[mask]
        users = self.user_ids.take(pa.array(rows))
        table = pa.Table.from_arrays(
            [pa.DictionaryArray.from_arrays(pa.array(np.repeat(np.arange(rows.size, dtype=np.int32), res.counts)),
                                            users),
             pa.array(ranks, pa.int16()), pa.DictionaryArray.from_arrays(pa.array(cand, pa.int32()), self.cand_ids),
             pa.array(scores, pa.float32())], schema=_WRITE_SCHEMA)
        if self.fragments is None:  # packed: the item table is the candidates in their order
            resp, _ = encode_packed_rec_sets(self.rec_prefix, users, res.items, res.scores, res.counts,
                                             self.spec.score_decimals, len(self.candidates))
        else:
            resp, _ = encode_rec_sets(self.rec_prefix, users.to_pylist(), self.fragments, res.items, res.scores,
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
        quota = -(-spec.users_sample * (end - start) // max(1, self.n_users))  # the shard's share, rounded up
        with fs.open(f"{spec.out_dir}/{pq_name}", "wb") as pfh, fs.open(f"{spec.out_dir}/{resp_name}", "wb") as rfh, \
                ThreadPoolExecutor(1, thread_name_prefix="skyrec-shard-writer") as out_pool, \
                ThreadPoolExecutor(1, thread_name_prefix="skyrec-shard-history") as hist_pool:
            writer = pq.ParquetWriter(pfh, _WRITE_SCHEMA, **PREDICTIONS_WRITER)
            # the users' histories do not depend on their lists: built while the lists are scored (the scan,
            # sort and string kernels release the GIL), written after them
            history = hist_pool.submit(self._shard_history, start, end)

            def emit(rows: np.ndarray, res: TopK) -> None:
                """Format and write one batch (runs while the next batch is being scored)."""
                table, resp, cand = self._outputs(rows, res)
                writer.write_table(table)
                rfh.write(resp)
                referenced[cand] = True
                stats["users"] += rows.size
                stats["rec_keys"] += int((res.counts > 0).sum())
                stats["rows"] += table.num_rows
                with_rec = rows[res.counts > 0]
                if with_rec.size and len(sample) < quota:  # each batch its share of the users sample
                    share = min(quota - len(sample), -(-spec.users_sample * rows.size // max(1, self.n_users)))
                    sample.extend(self.user_ids[int(r)].as_py()
                                  for r in with_rec[:: max(1, with_rec.size // max(1, share))][:share])

            pending = None
            try:
                for rows in self.batches(start, end):
                    res = self.score(rows)
                    if pending is not None:
                        pending.result()  # at most one batch in flight: memory stays bounded by the batch
                    pending = out_pool.submit(emit, rows, res)
                if pending is not None:
                    pending.result()
            finally:
                writer.close()
            hist_data, also_data, hist = history.result()
            rfh.write(also_data)  # the rail's own: in the shard's file, loaded with the publication
        if hist.get("hist_keys"):  # shared by the rails of the snapshot: a file of its own, skipped once loaded
            hist["hist"] = f"hist/part-{shard:05d}.resp"
            fs.makedirs(f"{spec.out_dir}/hist", exist_ok=True)
            with fs.open(f"{spec.out_dir}/{hist['hist']}", "wb") as hfh:
                hfh.write(hist_data)
        users, rec_keys, rows_out = stats["users"], stats["rec_keys"], stats["rows"]
        return ShardResult(shard=shard, users=users, rec_keys=rec_keys, empty=users - rec_keys, rows=rows_out,
                           parquet=pq_name, resp=resp_name, referenced=np.nonzero(referenced)[0].tolist(),
                           sample_users=sample, seconds=round(time.perf_counter() - t0, 3), **hist)

    def _shard_history(self, start: int, end: int) -> tuple[bytes, bytes, dict[str, Any]]:
        """The shard's users' recent plays (valid user ids only) as RESP ``SET`` commands into the history
        namespace, and, with the "more like this" lists known (``similar_lists``), the rail's ``also`` keys:
        each user's older plays in the lists of their recent plays (``history.also_played``); and the counts."""
        spec = self.spec
        if spec.history_items <= 0 or not spec.activity_path or end <= start:
            return b"", b"", {}
        from skyrec.publish.resp import first_commands
        from skyrec.scoring.history import also_played, encode_also_sets, encode_history_sets, read_shard_plays

        rows = np.arange(start, end)
        rows = rows[self.valid[rows]]
        lists = self.similar_lists()
        listed, listed_pos = self._listed()
        user_ids = self.user_ids.take(pa.array(rows))
        if self._histories is not None:  # read for every shard in one scan (``read_histories``)
            plays, played = self._histories.result().pop(start)
        else:
            plays, played = read_shard_plays(self.lake, spec.activity_path, user_ids, spec.history_items,
                                             keep_items=listed)
        also = None
        if lists is not None and played is not None and listed_pos is not None:
            played = sp.csr_matrix((played.data, listed_pos[played.indices], played.indptr),  # columns: candidates
                                   shape=(played.shape[0], len(self.candidates)))
            also = also_played(plays, played, user_ids,
                               self._seed_ids(), self.cand_ids, lists, self.candidates.item_to_cand)
        data, n, items = encode_history_sets(self.hist_prefix, plays)
        also_data, also_keys = (encode_also_sets(self.also_prefix, plays, also,  # packed: item table positions
                                                 table_size=len(self.candidates) if self.encoding == "packed" else None)
                                if also is not None else (b"", 0))
        lengths = np.diff(also.offsets.to_numpy()) if also is not None else np.zeros(0, np.int32)
        probes = {c[1].decode()[len(self.hist_prefix):]: c[2].decode() for c in first_commands(data, 2)}
        return data, also_data, {"hist_keys": n, "history_items": items, "also_played_users": also_keys,
                                 "also_played": int(lengths.sum()), "history_probes": probes}

    def _seed_ids(self) -> pa.Array:
        if self._seed_ids_pa is None:
            self._seed_ids_pa = pa.array([str(i) for i in self.item_ids.tolist()], pa.string())
        return self._seed_ids_pa

    def similar_lists(self) -> sp.csr_matrix | None:
        """The "more like this" lists as a seed (model item) x candidate matrix: those this scorer computed
        (``run_similar_shard``), else those the driver saved (``spec.similar_lists``), else None."""
        if self._sim_lists is None and self._sim_coo:
            rows = np.concatenate([r for r, _ in self._sim_coo])
            cols = np.concatenate([c for _, c in self._sim_coo])
            self._sim_lists = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)),
                                            shape=(len(self.item_ids), len(self.candidates)))
        if self._sim_lists is None and self.spec.similar_lists:
            with self.lake.fs.open(f"{self.spec.out_dir}/{self.spec.similar_lists}", "rb") as fh:
                m = sp.load_npz(fh).tocsr()
            if m.shape != (len(self.item_ids), len(self.candidates)):
                raise ValueError(f"{self.spec.similar_lists}: lists of shape {m.shape}, the model and rail have "
                                 f"{len(self.item_ids)} items and {len(self.candidates)} candidates")
            self._sim_lists = m
        return self._sim_lists

    def save_similar_lists(self, fh: Any) -> int:
        """Write ``similar_lists()`` (npz) for the workers that publish the histories; returns its entries."""
        lists = self.similar_lists()
        if lists is None:
            raise ValueError("no similar lists were computed")
        sp.save_npz(fh, lists.astype(np.int8))
        return int(lists.nnz)

    # ---- item-to-item ("more like this") --------------------------------------------------------
    @property
    def similar_enabled(self) -> bool:
        """Seeds are scored when the spec asks for them and the artefact names its model class."""
        return self.spec.similar_k > 0 and self.model_class is not None and self.item_factors is not None

    @property
    def similar_measure(self) -> str:
        """The spec's measure when the model class offers it, else its own (``dot``: EASE's and item-kNN's
        weights, popularity)."""
        offered = getattr(self.model_class, "similar_measures", ("dot",))
        return self.spec.similar_measure if self.spec.similar_measure in offered else "dot"

    def invalid_seeds(self) -> list[str]:
        """Model items whose id is not a valid key component (no sim key; counted by the caller)."""
        return [str(i) for i in self.item_ids.tolist() if not VALID_USER_ID.fullmatch(str(i))]

    def score_similar(self, seeds: np.ndarray) -> TopK:
        """The exact constrained top-K most similar candidates of each seed (model item index): the seed as a
        user (``item_queries``), itself excluded as a played item, the rail's candidates and brand cap."""
        c = self.candidates
        seeds = np.asarray(seeds, dtype=np.int64)
        k = min(self.spec.similar_k, max(1, len(c)))
        own = c.item_to_cand[seeds]
        rows = np.nonzero(own >= 0)[0]
        indptr = np.zeros(seeds.size + 1, dtype=np.int64)
        np.cumsum(own >= 0, out=indptr[1:])
        exclude = sp.csr_matrix((np.ones(rows.size, np.int8), own[rows].astype(np.int64), indptr),
                                shape=(seeds.size, len(c)))
        if self.similar_measure == "dot":
            queries, targets_t = self.model_class.item_queries(self.item_factors, seeds), c.item_factors_t
        else:
            if self._sim_targets is None:  # once per scorer: every item's seed row at unit length
                self._sim_targets = self.model_class.item_targets(self.item_factors, self.similar_measure)
                self._sim_targets_t = transposed(np.asarray(self._sim_targets)[c.positions])
            queries, targets_t = np.asarray(self._sim_targets)[seeds], self._sim_targets_t
        res = topk_threaded(queries, targets_t, k, pool=self._pool, threads=self.spec.threads,
                            exclude=exclude, brands=c.brands, max_per_brand=self.spec.max_per_brand,
                            sub_batch=self.spec.sub_batch)
        return like_it_only(res)

    def run_similar_shard(self, shard: int, start: int, end: int, *, probes: int = 4) -> SimilarResult:
        """Score model items [start, end) as seeds in batches; write ``sim/part-NNNNN.resp``."""
        t0 = time.perf_counter()
        spec = self.spec
        name = f"sim/part-{shard:05d}.resp"
        self.lake.fs.makedirs(f"{spec.out_dir}/sim", exist_ok=True)
        referenced = np.zeros(len(self.candidates), dtype=bool)
        seeds_total = keys = 0
        seed_ids: list[str] = []
        expected: dict[str, list[list[Any]]] = {}
        valid = np.fromiter((bool(VALID_USER_ID.fullmatch(str(i))) for i in self.item_ids[start:end].tolist()),
                            dtype=bool, count=max(0, end - start))
        with self.lake.fs.open(f"{spec.out_dir}/{name}", "wb") as fh:
            for s in range(start, end, spec.batch_size):
                seeds = np.arange(s, min(end, s + spec.batch_size))
                seeds = seeds[valid[seeds - start]]
                if seeds.size == 0:
                    continue
                res = self.score_similar(seeds)
                ids = [str(i) for i in self.item_ids[seeds].tolist()]
                if self.fragments is None:
                    data, n = encode_packed_rec_sets(self.sim_prefix, pa.array(ids, pa.string()), res.items,
                                                     res.scores, res.counts, spec.score_decimals, len(self.candidates))
                else:
                    data, n = encode_rec_sets(self.sim_prefix, ids, self.fragments, res.items, res.scores,
                                              res.counts, spec.score_decimals)
                fh.write(data)
                mask = np.arange(res.items.shape[1])[None, :] < res.counts[:, None]
                referenced[res.items[mask]] = True
                self._sim_coo.append((np.repeat(seeds, res.counts), res.items[mask].astype(np.int64)))
                self._sim_lists = self._listed_pos = None
                has = np.nonzero(res.counts > 0)[0]
                seed_ids.extend(ids[r] for r in has.tolist())
                for r in has[:: max(1, has.size // probes)][: max(0, probes - len(expected))].tolist():
                    expected[ids[r]] = [[str(self.candidates.item_ids[j]), float(v)] for j, v in
                                        zip(res.items[r, : res.counts[r]].tolist(),
                                            res.scores[r, : res.counts[r]].tolist(), strict=True)]
                seeds_total += seeds.size
                keys += n
        return SimilarResult(shard=shard, seeds=seeds_total, sim_keys=keys, resp=name,
                             referenced=np.nonzero(referenced)[0].tolist(), seed_ids=seed_ids, probes=expected,
                             seconds=round(time.perf_counter() - t0, 3))


def listeners(seen: Any) -> np.ndarray | None:
    """Each model item's number of listeners (users with the item in ``seen``): the candidates' tie order."""
    if seen is None:
        return None
    m = sp.csr_matrix(seen)
    return np.bincount(m.indices, minlength=m.shape[1]).astype(np.int64)


def like_it_only(res: TopK) -> TopK:
    """A "more like this" list holds only items with a positive similarity to the seed. The kernel fills a
    list it cannot fill from the seed's links with items that score 0 (item-kNN: no shared listener) by
    position, or below 0 (a dot product or cosine pointing away): those are not like the seed, and a seed
    with none is given no list (the API's 404 ``unknown_item``), so "because you played X" passes over it.
    The walk is best first, so the positive scores are a prefix of each row."""
    with np.errstate(invalid="ignore"):
        positive = (res.scores > 0).sum(axis=1).astype(res.counts.dtype)  # NaN padding is not > 0
    counts = np.minimum(res.counts, positive)
    cut = np.arange(res.items.shape[1])[None, :] >= counts[:, None]
    items, scores = res.items.copy(), res.scores.copy()
    items[cut], scores[cut] = -1, np.nan
    return TopK(items=items, scores=scores, counts=counts)


def similar_model_class(lake: Lake, manifest: Any, allowed: list[str] | None) -> Any:
    """The model class a committed model output names in its ``model.json`` (restricted to the configured
    class paths), whose ``item_queries`` scores seeds; None when the output holds no ``model.json`` (an
    artefact written without the model's own state cannot say what "similar" means for it)."""
    from skyrec.models import recommender_class

    try:
        with lake.open(manifest, "model.json") as fh:
            raw = fh.read()
    except KeyError:
        return None
    return recommender_class(raw, set(allowed) if allowed is not None else None)


def shard_ranges(n_users: int, shard_users: int) -> list[tuple[int, int, int]]:
    """(shard, start, end) covering [0, n_users) in shards of ``shard_users``."""
    step = max(1, shard_users)
    return [(i, s, min(n_users, s + step)) for i, s in enumerate(range(0, n_users, step))] or [(0, 0, 0)]


def default_threads(configured: int) -> int:
    return configured if configured > 0 else max(1, os.cpu_count() or 1)
