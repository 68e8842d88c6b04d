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
    """``n`` users (spread over the shards) and their expected ``[[item, score], ...]`` from the Parquet."""
    files = [f for f in manifest.files if f.path.endswith(".parquet") and "/parquet/" in f"/{f.path}"]
    rng = np.random.default_rng(seed)
    out: dict[str, list[list[Any]]] = {}
    if not files:
        return out
    per_file = max(1, -(-n // len(files)))
    for f in files:
        with lake.fs.open(lake.abspath(f"{manifest.path}/{f.path}"), "rb") as fh:
            table = pq.read_table(fh)
        if table.num_rows == 0:
            continue
        users = pc.unique(table.column("user_id")).to_pylist()
        pick = [users[i] for i in sorted(rng.choice(len(users), min(per_file, len(users)), replace=False))]
        sub = table.filter(pc.is_in(table.column("user_id"), value_set=pa.array(pick))).sort_by(
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
