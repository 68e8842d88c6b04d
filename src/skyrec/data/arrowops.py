"""Small vectorised Arrow operations shared by the ingestion steps."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def first_per_key(table: pa.Table, key: str, order: list[tuple[str, str]]) -> tuple[pa.Table, np.ndarray]:
    """Sort ``table`` by ``key`` then ``order`` and mark the first row of each key.

    Returns (sorted table, boolean mask of first occurrences): the winner of each key is the row that sorts
    first, so ``order`` states the rule (e.g. latest update wins, earliest event wins)."""
    t = table.take(pc.sort_indices(table, sort_keys=[(key, "ascending"), *order]))
    first = np.ones(t.num_rows, dtype=bool)
    if t.num_rows > 1:
        ids = t.column(key).combine_chunks()
        first[1:] = pc.not_equal(ids.slice(1), ids.slice(0, t.num_rows - 1)).to_numpy(zero_copy_only=False)
    return t, first
