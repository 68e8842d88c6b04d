"""Post-conditions of a load: probe users read back from Redis equal the committed Parquet, and probe seed
items' "more like this" lists equal those the precompute recorded (either value encoding,
``skyrec.publish.codec``: packed values are decoded with the publication's item table)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from skyrec.publish.codec import ITEM_TABLE_FIELD, CodecError, ItemTable, decode_value, is_packed, parse_table
from skyrec.publish.keys import Keys
from skyrec.storage import Lake, Manifest


class VerificationError(RuntimeError):
    """What Redis holds differs from the committed predictions."""


def probe_expectations(lake: Lake, manifest: Manifest, n: int, *, seed: int = 0) -> dict[str, list[list[Any]]]:
    """``n`` probe users spread over the shards and their expected ``[[item, score], ...]`` read from the
    committed Parquet: one random row group of each shard file (one scoring batch) and its neighbours, never a
    whole file (a file of a reference-scale shard holds ~13M rows). The neighbours are read so that a user
    whose rows straddle a row-group boundary is still compared on its whole list."""
    files = [f for f in manifest.files if f.path.endswith(".parquet") and "/parquet/" in f"/{f.path}"]
    rng = np.random.default_rng(seed)
    out: dict[str, list[list[Any]]] = {}
    if not files or n <= 0:
        return out
    per_file = max(1, -(-n // len(files)))
    for f in files:
        with lake.fs.open(lake.abspath(f"{manifest.path}/{f.path}"), "rb") as fh:
            pf = pq.ParquetFile(fh)
            groups = pf.metadata.num_row_groups
            if groups == 0:
                continue
            g = int(rng.integers(groups))
            middle = pf.read_row_group(g, columns=["user_id"]).column("user_id")
            around = [i for i in (g - 1, g, g + 1) if 0 <= i < groups]
            table = pf.read_row_groups(around)
        if len(middle) == 0:
            continue
        users = pc.unique(middle).to_pylist()
        pick = [users[i] for i in sorted(rng.choice(len(users), min(per_file, len(users)), replace=False))]
        sub = table.filter(pc.is_in(table.column("user_id"), value_set=pa.array(pick, pa.string()))).sort_by(
            [("user_id", "ascending"), ("rank", "ascending")]).to_pylist()
        for row in sub:
            out.setdefault(row["user_id"], []).append([row["item_id"], row["score"]])
        if len(out) >= n:
            break
    return out


def check_probes(redis_client: Any, keys: Keys, variant: str, pub: str, expected: dict[str, list[list[Any]]],
                 *, tolerance: float = 1e-4, kind: str = "rec") -> int:
    """Raise VerificationError unless every probe user's Redis value equals the Parquet (items in order,
    scores within ``tolerance`` of the rounded values). Returns the number of users checked.
    ``kind="sim"``: the probes are seed items and their ``sim`` keys are checked the same way."""
    users = list(expected)
    if not users:
        return 0
    key = keys.sim if kind == "sim" else keys.rec
    raws = redis_client.mget([key(variant, pub, u) for u in users])
    table: ItemTable | None = None
    if any(raw is not None and is_packed(raw) for raw in raws):
        try:
            table = parse_table(redis_client.hget(keys.items(variant, pub), ITEM_TABLE_FIELD))
        except CodecError as exc:
            raise VerificationError(f"{pub}: {exc}") from None
    for user, raw in zip(users, raws, strict=True):
        if raw is None:
            raise VerificationError(f"{pub}: no {kind} key for probe {'item' if kind == 'sim' else 'user'} {user!r}")
        try:
            got = decode_value(raw, table)
        except CodecError as exc:
            raise VerificationError(f"{pub}: {kind} {user!r}: {exc}") from None
        want = expected[user]
        if [g[0] for g in got] != [w[0] for w in want]:
            raise VerificationError(f"{pub}: {kind} {user!r}: items differ from the committed predictions")
        if any(abs(float(g[1]) - float(w[1])) > tolerance * max(1.0, abs(float(w[1]))) for g, w in
               zip(got, want, strict=True)):
            raise VerificationError(f"{pub}: {kind} {user!r}: scores differ from the committed predictions")
    return len(users)


def similar_probes(manifest: Manifest) -> dict[str, list[list[Any]]]:
    """The seed items' expected "more like this" lists the precompute recorded in its manifest."""
    similar = manifest.meta.get("similar") or {}
    probes = similar.get("probes") if isinstance(similar, dict) else None
    return dict(probes) if isinstance(probes, dict) else {}


def check_history_probes(redis_client: Any, keys: Keys, pub: str, activity: str | None,
                         expected: dict[str, str]) -> int:
    """Raise VerificationError unless a few users' history values (``history_probes`` of the predictions: the
    values the precompute wrote) read back byte for byte from the namespace the pointer will name. This proves
    the shared namespace holds this publication's plays, whether its files were loaded now or by another rail.
    Returns the number of users checked."""
    if not activity or not expected:
        return 0
    users = list(expected)
    raws = redis_client.mget([keys.hist(activity, u) for u in users])
    for user, raw in zip(users, raws, strict=True):
        if raw is None:
            raise VerificationError(f"{pub}: no history key for probe user {user!r} in {activity!r}")
        if (raw.decode() if isinstance(raw, bytes) else str(raw)) != expected[user]:
            raise VerificationError(f"{pub}: history of {user!r} in {activity!r} differs from the committed "
                                    "predictions")
    return len(users)
