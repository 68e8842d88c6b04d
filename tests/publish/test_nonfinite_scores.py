"""The rec-value encoders refuse a listed score that is NaN or +-inf instead of writing a wrong value.

Before: the JSON encoder wrote +-inf as a wrong number (``-2.24192`` at 5 decimals) and NaN as ``0.00000``; the
packed ones said "scores up to inf do not fit 5 decimals" for +-inf, "not best first" for a NaN at the head
of a list, and quantised a NaN at its tail to 0 without a word. The places after a list (the kernel pads them
with NaN) are never served and are not looked at.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pytest

from skyrec.publish.codec import NonFiniteScores, encode_packed_sets, encode_packed_values
from skyrec.publish.resp import encode_packed_rec_sets, encode_rec_sets, fixed_width_fragments

ITEMS = [f"i{j}" for j in range(8)]
USERS = [f"u{r}" for r in range(9)]

Encoder = Callable[[np.ndarray, np.ndarray, np.ndarray], object]

ENCODERS: dict[str, Encoder] = {
    "json": lambda items, scores, counts: encode_rec_sets("p:", USERS[:len(items)], fixed_width_fragments(ITEMS),
                                                          items, scores, counts, 5),
    "packed": lambda items, scores, counts: encode_packed_sets("p:", USERS[:len(items)], items, scores, counts, 5,
                                                               len(ITEMS)),
    "packed-compiled": lambda items, scores, counts: encode_packed_rec_sets("p:", pa.array(USERS[:len(items)]), items,
                                                                            scores, counts, 5, len(ITEMS)),
    "packed-values": lambda items, scores, counts: (lambda data, offsets: (data, offsets.tolist()))(
        *encode_packed_values(items, scores, counts, 5, len(ITEMS))),
}


def _batch(b: int = 4, k: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    items = np.tile(np.arange(k, dtype=np.int32), (b, 1))
    scores = np.tile(np.array([0.75, 0.5, 0.25][:k], np.float32), (b, 1))
    return items, scores, np.full(b, k, dtype=np.int32)


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize(("where", "value", "kind"), [
    (0, np.inf, "+inf"),  # JSON: a wrong number; packed: "scores up to inf do not fit"
    (0, -np.inf, "-inf"),
    (0, np.nan, "NaN"),  # packed: "not best first"
    (2, np.nan, "NaN"),  # the tail of a list: JSON 0.00000, packed quantised to 0, both silently
])
def test_a_listed_score_that_is_not_finite_is_refused(encoder: str, where: int, value: float, kind: str) -> None:
    items, scores, counts = _batch()
    scores[1, where] = value
    scores[3, where] = value
    with pytest.raises(NonFiniteScores) as err:
        ENCODERS[encoder](items, scores, counts)
    assert isinstance(err.value, ValueError)
    message = str(err.value)
    assert message.startswith(f"2 listed scores are not finite ({kind} 2) in 2 of 4 lists: "), message
    names = "batch rows 1, 3" if encoder == "packed-values" else "keys 'p:u1', 'p:u3' (batch rows 1, 3)"
    assert names in message and "refusing to encode a score that would be served wrong" in message


@pytest.mark.parametrize("encoder", ENCODERS)
def test_the_message_counts_each_kind_and_names_the_first_five_lists(encoder: str) -> None:
    items, scores, counts = _batch(b=9)
    scores[:, 0] = [np.inf, np.nan, np.nan, -np.inf, np.nan, np.inf, 0.75, np.nan, np.nan]
    with pytest.raises(NonFiniteScores) as err:
        ENCODERS[encoder](items, scores, counts)
    message = str(err.value)
    assert "8 listed scores are not finite (NaN 5, +inf 2, -inf 1) in 8 of 9 lists: " in message, message
    assert "rows 0, 1, 2, 3, 4), and 3 more" in message or "rows 0, 1, 2, 3, 4, and 3 more" in message


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("padding", [np.nan, np.inf, -np.inf])
def test_the_places_after_a_list_are_not_looked_at(encoder: str, padding: float) -> None:
    """Short lists, padded with anything (the kernel pads NaN): the same bytes as NaN padding, no error."""
    items, scores, counts = _batch()
    counts[:] = [3, 1, 0, 2]
    pad = np.arange(3)[None, :] >= counts[:, None]
    items[pad] = -1
    want_scores = scores.copy()
    want_scores[pad] = np.nan
    scores[pad] = padding
    assert ENCODERS[encoder](items, scores, counts) == ENCODERS[encoder](items, want_scores, counts)
    if encoder == "json":
        data, n = ENCODERS[encoder](items, scores, counts)  # type: ignore[misc]
        assert n == 3 and b'["i0", 0.75000]]' in data and b"inf" not in data and b"nan" not in data


def test_json_refuses_a_finite_score_too_large_for_its_decimals_as_packed_does() -> None:
    """A finite score whose 10^d multiple is not an exact integer (>= 2^53): JSON wrote a wrong number
    (past int64, ``1e14`` at 5 decimals came out negative); it is refused, as the packed encoding refuses it."""
    items, scores, counts = _batch(b=1)
    scores[0, 0] = 1e14
    for encoder in ENCODERS:
        with pytest.raises(ValueError, match=r"scores up to 1e\+14 do not fit 5 decimals exactly"):
            ENCODERS[encoder](items, scores, counts)
