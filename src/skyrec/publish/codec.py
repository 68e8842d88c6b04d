"""Value encodings of the per-user recommendation lists (``{p}:rec:{variant}:{pub}:{user}``).

Two encodings, chosen by ``publish.encoding`` and named by the publication (its predictions meta and serving
pointer carry ``"encoding"``); the API reads both, so a rolling change never breaks an answer:

``json``   ``[["item_id", score], ...]`` best first, scores with ``precompute.score_decimals`` decimals.
           ~1.4 KB per user at k = 50 (fixed-width fragments, item ids repeated in every value).

``packed`` positions into the publication's **item table** plus quantised scores, in bytes::

             0x01                      tag (a JSON value starts with ``[``, so every value says what it is)
             flags                     bit 0: positions are uint32 (else uint16: tables up to 65,536 items);
                                       bits 1-2: gap width g of this list, 1/2/4/8 bytes (code 0..3)
             varint n                  number of items (LEB128, one byte below 128)
             n x uint16|uint32 (LE)    positions into the item table, best first
             varint zigzag(q[0])       the best score, quantised: q = round(score * 10^d)
             (n - 1) x uint(g) (LE)    q[i-1] - q[i] >= 0 (lists are best first: the gaps are small numbers;
                                       g is the narrowest width holding this list's largest gap)

           ``d`` is the publication's ``score_decimals``, stored once in the table. ~200 bytes at k = 50.
           Fixed widths keep the API's decoding in C (``struct``): a few microseconds for 50 items.

The ``also`` keys of a packed publication (the older plays "because you played X" leaves out: a set of item
ids, ``skyrec.publish.keys``) are positions into the same item table::

             0x02                      tag (an id set)
             flags                     bit 0: positions are uint32 (else uint16)
             varint n                  number of items
             n x uint16|uint32 (LE)    positions into the item table

           2 bytes an id below 65,537 items (a JSON id costs its length + 3). ``encode_also_values`` writes them,
           ``decode_also`` reads them; ``keys.parse_also`` reads either encoding.

The item table is one field of the publication's items hash (``ITEM_TABLE_FIELD``, not a valid item id), so the
publication still has one items key, removed with it: JSON ``{"encoding": "packed", "version": 1,
"decimals": d, "items": ["item_id", ...]}`` in candidate order. The API reads it once per publication.

Scores. A served score is ``q / 10^d``: **the same float the JSON encoding serves** (the nearest double to
the rounded decimal), so both encodings answer identically and the tolerance is the JSON one,
``|served - score| <= 0.5 * 10^-d`` (5e-6 at the default d = 5). Order: a list is kept in the kernel's order
(score descending, candidate position ascending on ties) and rounding is monotonic, so served scores never
increase down a list; two scores closer than 10^-d may be served equal (the tie rule of both encodings), the
list order between them is still the kernel's. Neither encoding writes a score it cannot serve right: a listed
score that is NaN or +-inf (``NonFiniteScores``) or whose ``q`` is not an exact integer (``|q| >= 2^53``) is
refused with a ValueError, and the batch is not written.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate, repeat
from operator import itemgetter, sub, truediv
from typing import Literal, TypeGuard

import numpy as np

Encoding = Literal["json", "packed"]
ENCODINGS: tuple[str, ...] = ("json", "packed")
PACKED_TAG = 0x01
ALSO_TAG = 0x02
PACKED_VERSION = 1
FLAG_WIDE = 0x01
_GAP_WIDTH = (1, 2, 4, 8)  # bytes per score gap, by the flags' code (bits 1-2)
_GAP_CODE = ("B", "H", "I", "Q")
# A field of the items hash that no item can have (item ids are catalogue ids, never start with NUL).
ITEM_TABLE_FIELD = "\x00item_table"
_MAX_EXACT = float(2 ** 53)  # quantised scores must stay exact integers in a float64 and an int64


class CodecError(ValueError):
    """A stored value or item table cannot be decoded (names what is wrong)."""


class NonFiniteScores(ValueError):
    """A list to encode holds a score that is NaN or +-inf: neither encoding can serve it right (a JSON value
    would hold a wrong number, a packed one has no code for it), so the batch is refused, never written."""


# ---- the item table ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemTable:
    """A publication's ordered item ids (positions are what packed values store) and score decimals."""

    item_ids: tuple[str, ...]
    decimals: int

    @property
    def scale(self) -> float:
        return float(10 ** self.decimals)


def table_value(item_ids: Sequence[str], decimals: int) -> str:
    """The item table as stored in the items hash (compact JSON)."""
    return json.dumps({"encoding": "packed", "version": PACKED_VERSION, "decimals": int(decimals),
                       "items": [str(i) for i in item_ids]}, separators=(",", ":"))


def parse_table(raw: bytes | str | None) -> ItemTable:
    """The item table stored by ``table_value``; CodecError naming the problem otherwise."""
    if raw is None:
        raise CodecError("the publication has no item table (packed values cannot be decoded)")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise CodecError(f"item table is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("encoding") != "packed":
        raise CodecError("item table: not a packed item table")
    if data.get("version") != PACKED_VERSION:
        raise CodecError(f"item table: version {data.get('version')!r} not supported (reads {PACKED_VERSION})")
    decimals, items = data.get("decimals"), data.get("items")
    if not isinstance(decimals, int) or not 0 <= decimals <= 9:
        raise CodecError(f"item table: decimals {decimals!r} is not an integer in 0..9")
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise CodecError("item table: items must be a list of strings")
    return ItemTable(tuple(items), decimals)


# ---- encoding (vectorised over a batch of users) ----------------------------------------------------------


def _varints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LEB128 of non-negative int64 ``values`` [b, m]: (bytes [b, m, 10] uint8, lengths [b, m])."""
    v = values.astype(np.uint64)
    lengths = np.ones(v.shape, dtype=np.int64)
    for j in range(1, 10):
        lengths += v >= np.uint64(1 << (7 * j))
    shifts = (np.arange(10, dtype=np.uint64) * np.uint64(7))
    out = ((v[..., None] >> shifts) & np.uint64(0x7F)).astype(np.uint8)
    more = np.arange(10)[None, None, :] < (lengths[..., None] - 1)
    out |= (more * 0x80).astype(np.uint8)
    return out, lengths


def check_finite_scores(scores: np.ndarray, counts: np.ndarray, *, valid: np.ndarray | None = None,
                        key: Callable[[int], str] | None = None) -> None:
    """Refuse (``NonFiniteScores``, a ValueError) a batch whose listed scores (the first ``counts[i]`` of row
    i; ``valid`` is that mask when the caller has it) hold NaN or +-inf; the places after a list (NaN padded
    by the kernel) are not looked at. The message says how many of each kind, in how many lists, and names the
    first few: ``key(row)`` (the list's Redis key) when given, and their batch rows. The common path is one
    vectorised pass (``np.isfinite`` over the batch); the rest runs only for a batch with a short list."""
    s = np.asarray(scores)
    if s.dtype.kind != "f" or s.size == 0:
        return
    finite = np.isfinite(s)
    if finite.all():  # every place of every list: nothing to look at (no padding either)
        return
    if valid is None:
        valid = np.arange(s.shape[1])[None, :] < np.asarray(counts)[:, None]
    bad = valid & ~finite
    if not bad.any():
        return
    values = s[bad]
    kinds = {"NaN": int(np.count_nonzero(np.isnan(values))), "+inf": int(np.count_nonzero(values == np.inf)),
             "-inf": int(np.count_nonzero(values == -np.inf))}
    rows = np.nonzero(bad.any(axis=1))[0]
    shown = rows[:5].tolist()
    keys = f"keys {', '.join(repr(key(r)) for r in shown)} (batch rows " if key else "batch rows "
    more = f", and {rows.size - len(shown):,} more" if rows.size > len(shown) else ""
    raise NonFiniteScores(
        f"{values.size:,} listed scores are not finite ({', '.join(f'{n} {c:,}' for n, c in kinds.items() if c)}) "
        f"in {rows.size:,} of {s.shape[0]:,} lists: {keys}{', '.join(map(str, shown))}{')' if key else ''}{more}; "
        "refusing to encode a score that would be served wrong")


def quantise(scores: np.ndarray, decimals: int) -> np.ndarray:
    """round(score * 10^d) as int64, the integer both encodings serve (``q / 10^d``). Scores must be finite
    where they are listed (the encoders call ``check_finite_scores`` first): NaN and +-inf quantise to 0, which only
    the places after a list (NaN padded), never served, can hold."""
    x = np.array(scores, dtype=np.float64)  # a copy: worked on in place
    np.nan_to_num(x, copy=False, posinf=0.0, neginf=0.0)
    x *= 10.0 ** decimals
    if x.size and (top := max(float(x.max()), -float(x.min()))) >= _MAX_EXACT:
        raise ValueError(f"scores up to {top / 10.0 ** decimals:g} do not fit "
                         f"{decimals} decimals exactly (lower precompute.score_decimals)")
    return np.rint(x, out=x).astype(np.int64)


def encode_packed_values(items: np.ndarray, scores: np.ndarray, counts: np.ndarray, decimals: int,
                         table_size: int, *, key: Callable[[int], str] | None = None) -> tuple[bytes, np.ndarray]:
    """The packed values of a batch: ``items``/``scores`` [b, k] best first (item table positions), the first
    ``counts[i]`` entries of row i are its list. Returns (all values concatenated, offsets [b + 1]); a row with
    no item has an empty value. Raises ValueError for positions outside the table, listed scores that are not
    finite (``NonFiniteScores``, naming ``key(row)`` of the first few lists when given), scores too large to
    quantise, or lists not best first."""
    b, k = items.shape
    counts = np.asarray(counts, dtype=np.int64)
    if b == 0:
        return b"", np.zeros(1, dtype=np.int64)
    if counts.min() < 0 or counts.max() > k:
        raise ValueError(f"counts must be within 0..{k}")
    valid = np.arange(k)[None, :] < counts[:, None]
    pos = np.where(valid, items, 0).astype(np.int64)
    if pos.size and (pos.min() < 0 or pos.max() >= table_size):
        raise ValueError(f"item positions must be within the item table (0..{table_size - 1})")
    check_finite_scores(scores, counts, valid=valid, key=key)
    q = np.where(valid, quantise(scores, decimals), 0)
    gaps = np.zeros_like(q)
    gaps[:, 1:] = np.where(valid[:, 1:], q[:, :-1] - q[:, 1:], 0)
    bad = np.nonzero((gaps < 0).any(axis=1))[0]
    if bad.size:
        raise ValueError(f"list of batch row {int(bad[0])} is not best first (scores increase)")
    wide = table_size > 0x10000
    iw = 4 if wide else 2
    top = gaps.max(axis=1)
    code = np.select([top < 1 << 8, top < 1 << 16, top < 1 << 32], [0, 1, 2], 3)  # |q| < 2^53: 8 bytes hold all
    gw = np.array(_GAP_WIDTH, dtype=np.int64)[code]
    zig = np.where(q[:, 0] >= 0, q[:, 0] * 2, -q[:, 0] * 2 - 1)
    # Every value is laid out in fixed slots, row by row, with a mask of the bytes it uses; the masked
    # selection (row-major) *is* the concatenation of the values: no per-user or per-item Python.
    head = np.empty((b, 2), dtype=np.uint8)
    head[:, 0] = PACKED_TAG
    head[:, 1] = (FLAG_WIDE if wide else 0) | (code << 1)
    n_bytes, n_len = _varints(counts[:, None])
    q_bytes, q_len = _varints(zig[:, None])
    slot = np.arange(10)[None, :]
    gap_bytes = gaps[:, 1:].astype("<u8").view(np.uint8).reshape(b, (k - 1) * 8)
    parts = [head, n_bytes[:, 0, :], pos.astype("<u4" if wide else "<u2").view(np.uint8).reshape(b, k * iw),
             q_bytes[:, 0, :], gap_bytes]
    masks = [np.ones((b, 2), dtype=bool), slot < n_len, np.arange(k * iw)[None, :] < (counts * iw)[:, None],
             slot < q_len,
             ((np.arange(k - 1)[None, :, None] < (counts - 1)[:, None, None])
              & (np.arange(8)[None, None, :] < gw[:, None, None])).reshape(b, (k - 1) * 8)]
    has = counts > 0
    keep = np.concatenate(masks, axis=1) & has[:, None]
    data = np.concatenate(parts, axis=1)[keep].tobytes()
    offsets = np.zeros(b + 1, dtype=np.int64)
    np.cumsum(keep.sum(axis=1), out=offsets[1:])
    return data, offsets


def encode_packed_sets(key_prefix: str, user_ids: Sequence[str], items: np.ndarray, scores: np.ndarray,
                       counts: np.ndarray, decimals: int, table_size: int) -> tuple[bytes, int]:
    """``SET <key_prefix><user> <packed value>`` for every user with ``counts > 0``: (RESP bytes, commands)."""
    data, offsets = encode_packed_values(items, scores, counts, decimals, table_size,
                                         key=lambda r: key_prefix + user_ids[r])
    prefix = key_prefix.encode()
    pieces: list[bytes] = []
    append = pieces.append
    n = 0
    offs = offsets.tolist()
    for r in np.nonzero(np.asarray(counts) > 0)[0].tolist():
        key = prefix + user_ids[r].encode()
        a, z = offs[r], offs[r + 1]
        append(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n" % (len(key), key, z - a))
        append(data[a:z])
        append(b"\r\n")
        n += 1
    return b"".join(pieces), n


def encode_also_values(offsets: np.ndarray, positions: np.ndarray, table_size: int) -> tuple[bytes, np.ndarray]:
    """The packed ``also`` values of a batch of users: user u's ids are ``positions[offsets[u]:offsets[u + 1]]``
    (item table positions). Returns (all values concatenated, their offsets [b + 1]); a user with none gets a
    value holding 0 items (the caller writes no key for them). ValueError for positions outside the table."""
    offsets = np.asarray(offsets, dtype=np.int64)
    positions = np.asarray(positions, dtype=np.int64)
    b = offsets.size - 1
    if b < 0 or (b and (offsets[0] != 0 or offsets[-1] != positions.size or (np.diff(offsets) < 0).any())):
        raise ValueError("also values: offsets must rise from 0 to the number of positions")
    if positions.size and (positions.min() < 0 or positions.max() >= table_size):
        raise ValueError(f"also values: item positions must be within the item table (0..{table_size - 1})")
    wide = table_size > 0x10000
    iw = 4 if wide else 2
    counts = np.diff(offsets)
    n_bytes, n_len = _varints(counts[:, None])
    head = np.concatenate([np.full((b, 1), ALSO_TAG, np.uint8), np.full((b, 1), FLAG_WIDE if wide else 0, np.uint8),
                           n_bytes[:, 0, :]], axis=1)
    head_len = 2 + n_len[:, 0]
    head_data = head[np.arange(12)[None, :] < head_len[:, None]]  # row-major: the heads laid end to end
    body = positions.astype("<u4" if wide else "<u2").view(np.uint8)
    # each value is its head then its positions: interleave the two byte streams by value
    sizes = head_len + counts * iw
    out = np.empty(int(sizes.sum()), np.uint8)
    starts = np.zeros(b + 1, np.int64)
    np.cumsum(sizes, out=starts[1:])
    in_head = np.zeros(out.size, bool)
    first = np.cumsum(head_len) - head_len  # where each head starts among the heads' bytes
    in_head[np.repeat(starts[:-1] - first, head_len) + np.arange(int(head_len.sum()))] = True
    out[in_head] = head_data
    out[~in_head] = body
    return out.tobytes(), starts


def decode_also(raw: bytes | bytearray, table: ItemTable) -> set[str]:
    """A packed ``also`` value as the set of its item ids. CodecError when it is malformed."""
    size = len(raw)
    if size < 3 or raw[0] != ALSO_TAG:
        raise CodecError("not a packed also value")
    wide = raw[1] & FLAG_WIDE
    n, pos = _varint(raw, 2, "packed also value truncated in its length")
    iw = 4 if wide else 2
    if pos + n * iw != size:
        raise CodecError(f"packed also value of {size} bytes does not hold {n} items")
    if n == 0:
        return set()
    ids = table.item_ids
    try:
        return {ids[p] for p in struct.unpack_from(f"<{n}{'I' if wide else 'H'}", raw, pos)}
    except IndexError:
        raise CodecError(f"packed also value names a position beyond the item table ({len(ids)} items)") from None


# ---- decoding (the API's hot path: plain Python, a few microseconds for 50 items) ----------------------------

def is_packed(raw: object) -> TypeGuard[bytes | bytearray]:
    """Whether a stored value is in the packed encoding (its first byte is the tag)."""
    return isinstance(raw, bytes | bytearray) and len(raw) > 0 and raw[0] == PACKED_TAG





def _varint(raw: bytes | bytearray, pos: int, truncated: str) -> tuple[int, int]:
    """The unsigned LEB128 varint at ``pos`` and the position after it (CodecError ``truncated`` past the end)."""
    value = shift = 0
    size = len(raw)
    while True:
        if pos >= size:
            raise CodecError(truncated)
        byte = raw[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7

def decode_packed(raw: bytes | bytearray, table: ItemTable) -> list[tuple[str, float]]:
    """A packed value as ``[(item_id, score), ...]`` best first. CodecError when it is malformed."""
    size = len(raw)
    if size < 3 or raw[0] != PACKED_TAG:
        raise CodecError("not a packed value")
    flags = raw[1]
    wide = flags & FLAG_WIDE
    gw_code = (flags >> 1) & 0x03
    n, pos = _varint(raw, 2, "packed value truncated in its length")
    if n == 0:
        return []
    iw = 4 if wide else 2
    zig, stop = _varint(raw, pos + n * iw, f"packed value truncated: {n} items need more than {size} bytes")
    gw = _GAP_WIDTH[gw_code]
    if stop + (n - 1) * gw != size:
        raise CodecError(f"packed value of {size} bytes does not hold {n} items")
    ids = table.item_ids
    try:
        names = itemgetter(*struct.unpack_from(f"<{n}{'I' if wide else 'H'}", raw, pos))(ids)
    except IndexError:
        raise CodecError(f"packed value names a position beyond the item table ({len(ids)} items)") from None
    q0 = (zig >> 1) ^ -(zig & 1)
    scale = table.scale
    if n == 1:
        return [(names, q0 / scale)]
    gaps = struct.unpack_from(f"<{n - 1}{_GAP_CODE[gw_code]}", raw, stop)
    return list(zip(names, map(truediv, accumulate(gaps, sub, initial=q0), repeat(scale, n)), strict=True))


def decode_value(raw: bytes | str, table: ItemTable | None) -> list[tuple[str, float]]:
    """A stored list in either encoding (strict: CodecError when malformed; ``table`` needed for packed)."""
    if is_packed(raw):
        if table is None:
            raise CodecError("packed value but the publication has no item table")
        return decode_packed(raw, table)
    try:
        data = json.loads(raw)
        return [(str(i), float(sc)) for i, sc in data]
    except (ValueError, TypeError) as exc:
        raise CodecError(f"value is neither packed nor a JSON [[item, score], ...] list: {exc}") from None


def check_encoding(value: str) -> Encoding:
    if value not in ENCODINGS:
        raise ValueError(f"encoding {value!r} is not one of {', '.join(ENCODINGS)}")
    return value  # type: ignore[return-value]
