"""The compiled packed-SET writer (``encode_packed_rec_sets``) is ``codec.encode_packed_sets`` byte for byte."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from skyrec.publish.codec import encode_packed_sets
from skyrec.publish.resp import encode_packed_rec_sets


def _batch(rng: np.random.Generator, b: int, k: int, table: int, scale: float) -> tuple[np.ndarray, ...]:
    items = np.stack([rng.permutation(table)[:k] for _ in range(b)]).astype(np.int32) if b else \
        np.zeros((0, k), np.int32)
    scores = np.sort(rng.standard_normal((b, k)) * scale)[:, ::-1].astype(np.float32)
    counts = rng.integers(0, k + 1, b).astype(np.int32)
    pad = np.arange(k)[None, :] >= counts[:, None]
    items[pad], scores[pad] = -1, np.nan
    return items, scores, counts


@pytest.mark.parametrize("seed", range(6))
def test_byte_identical_to_the_codec(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for table in (60, 300, 70_000):  # 2-byte and 4-byte positions
        for scale in (1e-4, 1.0, 50.0, 1e5):  # 1-, 2-, 4- and 8-byte score gaps, negative scores
            b, k = int(rng.integers(1, 120)), int(rng.integers(1, 55))
            items, scores, counts = _batch(rng, b, k, table, scale)
            names = [("ü" if i % 5 == 0 else "") + f"u{i}" for i in range(b + 7)]
            users = pa.array(names).slice(3, b)  # an Arrow slice: non-zero offset into its buffers
            decimals = int(rng.integers(0, 7))
            want = encode_packed_sets("p:rec:v:x:", names[3:3 + b], items, scores, counts, decimals, table)
            assert encode_packed_rec_sets("p:rec:v:x:", users, items, scores, counts, decimals, table) == want
    assert encode_packed_rec_sets("p:", pa.array([], pa.string()), np.zeros((0, 3), np.int32),
                                  np.zeros((0, 3), np.float32), np.zeros(0, np.int32), 5, 10) == (b"", 0)


def test_same_errors_as_the_codec() -> None:
    items = np.array([[0, 1], [2, 9]], np.int32)
    scores = np.array([[0.5, 0.4], [0.3, 0.2]], np.float32)
    users = pa.array(["a", "b"])
    with pytest.raises(ValueError, match="item table"):
        encode_packed_rec_sets("p:", users, items, scores, np.array([2, 2]), 5, 5)
    with pytest.raises(ValueError, match="not best first"):
        encode_packed_rec_sets("p:", users, items, scores[:, ::-1].copy(), np.array([2, 2]), 5, 10)
    with pytest.raises(ValueError, match="do not fit"):
        encode_packed_rec_sets("p:", users, items, scores * 1e12, np.array([2, 2]), 5, 10)
    with pytest.raises(ValueError, match="user ids"):
        encode_packed_rec_sets("p:", pa.array(["a"]), items, scores, np.array([2, 2]), 5, 10)
