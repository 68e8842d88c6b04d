"""Redis mass-insertion files (the RESP protocol) and a fast loader for them.

A ``.resp`` file is a plain concatenation of RESP-encoded commands (``*3\\r\\n$3\\r\\nSET\\r\\n$...``), exactly
what ``redis-cli --pipe`` reads. Writing them is vectorised through Arrow string kernels (no per-user
Python): keys, values and their lengths are string arrays joined element-wise, and the joined array's
data buffer *is* the file content.

Loading streams a file over one socket while a reader thread consumes the replies, so the server never
stalls on a full output buffer; every reply is counted and errors are kept, so the caller can prove that
every command was applied (the post-condition of a load).
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class RedisLoadError(RuntimeError):
    """Loading into Redis failed: the server is unreachable, closed the connection or answered errors.
    Retryable: loads are idempotent (SET/HSET/SADD of the same publication's keys). ``error_samples``: the
    first error replies, when the server answered errors (``-OOM ...`` when it refused writes when full)."""

    def __init__(self, message: str, error_samples: list[str] | None = None) -> None:
        super().__init__(message)
        self.error_samples = list(error_samples or [])

    @property
    def out_of_memory(self) -> bool:
        """Whether the server refused writes because it reached its ``maxmemory``."""
        return any(s.lstrip("-").startswith("OOM") for s in self.error_samples)


def _b(x: str | bytes | int | float) -> bytes:
    if isinstance(x, bytes):
        return x
    return str(x).encode()


def encode_command(*args: str | bytes | int | float) -> bytes:
    """One RESP command (array of bulk strings)."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        data = _b(a)
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _concat_buffer(arr: pa.Array) -> bytes:
    """The bytes of a string (or binary) array's values laid end to end (no separators)."""
    if isinstance(arr, pa.ChunkedArray):
        return b"".join(_concat_buffer(c) for c in arr.chunks)
    if len(arr) == 0:
        return b""
    if arr.type not in (pa.large_string(), pa.large_binary()):
        arr = arr.cast(pa.large_binary() if pa.types.is_binary(arr.type) else pa.large_string())
    offs = np.frombuffer(arr.buffers()[1], dtype=np.int64, count=len(arr) + 1, offset=arr.offset * 8)
    return arr.buffers()[2].slice(int(offs[0]), int(offs[-1] - offs[0])).to_pybytes()


def _lengths(arr: pa.Array) -> pa.Array:
    return pc.cast(pc.binary_length(arr), pa.string())


def encode_sets(keys: pa.Array, values: pa.Array) -> bytes:
    """``SET key value`` for every pair, vectorised. Keys are a string array, values a string or binary array
    (packed values), neither with nulls."""
    if len(keys) != len(values):
        raise ValueError(f"{len(keys)} keys for {len(values)} values")
    if len(keys) == 0:
        return b""
    if keys.null_count or values.null_count:
        raise ValueError("keys and values must not be null")
    t = pa.large_binary() if pa.types.is_binary(values.type) or pa.types.is_large_binary(values.type) \
        else pa.large_string()
    keys, values = keys.cast(t), values.cast(t)
    joined = pc.binary_join_element_wise(
        pa.scalar(b"*3\r\n$3\r\nSET\r\n$", t), _lengths(keys).cast(t),
        pa.scalar(b"\r\n", t), keys, pa.scalar(b"\r\n$", t),
        _lengths(values).cast(t), pa.scalar(b"\r\n", t), values,
        pa.scalar(b"\r\n", t), pa.scalar(b"", t))
    return _concat_buffer(joined)


def encode_hset(key: str, mapping: Sequence[tuple[str, str]], *, chunk: int = 1000) -> tuple[bytes, int]:
    """``HSET key f v ...`` in chunks of ``chunk`` fields. Returns (bytes, number of commands)."""
    pairs = list(mapping)
    return encode_hset_columns(key, pa.array([f for f, _ in pairs], pa.string()),
                               pa.array([v for _, v in pairs], pa.string()), chunk=chunk)


def encode_hset_columns(key: str, fields: pa.Array, values: pa.Array, *, chunk: int = 1000) -> tuple[bytes, int]:
    """``encode_hset`` over two string arrays (no nulls), vectorised: each field/value pair is joined
    column-wise and each command's head names its number of fields."""
    if len(fields) != len(values):
        raise ValueError(f"{len(fields)} fields for {len(values)} values")
    if chunk < 1:
        raise ValueError(f"chunk {chunk}: at least 1")
    if len(fields) == 0:
        return b"", 0
    if fields.null_count or values.null_count:
        raise ValueError("hash fields and values must not be null")
    fields, values = fields.cast(pa.large_string()), values.cast(pa.large_string())
    s = pa.large_string()
    pairs = pc.binary_join_element_wise(
        pa.scalar("$", s), _lengths(fields).cast(s), pa.scalar("\r\n", s), fields, pa.scalar("\r\n$", s),
        _lengths(values).cast(s), pa.scalar("\r\n", s), values, pa.scalar("\r\n", s), pa.scalar("", s))
    head = b"$4\r\nHSET\r\n$%d\r\n%s\r\n" % (len(key.encode()), key.encode())
    out = []
    for start in range(0, len(pairs), chunk):
        part = pairs.slice(start, chunk)
        out += [b"*%d\r\n" % (2 + 2 * len(part)), head, _concat_buffer(part)]
    return b"".join(out), len(out) // 3


def encode_sadd(key: str, members: Sequence[str], *, chunk: int = 1000) -> tuple[bytes, int]:
    out, n = [], 0
    for s in range(0, len(members), chunk):
        out.append(encode_command("SADD", key, *members[s:s + chunk]))
        n += 1
    return b"".join(out), n


# ---- loading --------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    commands: int = 0  # replies received (one per command sent)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0

    @property
    def commands_per_second(self) -> float:
        return self.commands / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"commands": self.commands, "errors": self.errors, "error_samples": self.error_samples,
                "bytes": self.bytes, "seconds": round(self.seconds, 3)}


class _ReplyCounter(threading.Thread):
    """Counts single-line replies (+OK, :n, -ERR) on the socket until ``expected`` have arrived."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(daemon=True, name="skyrec-resp-replies")
        self.sock = sock
        self.replies = 0
        self.errors = 0
        self.samples: list[str] = []
        self.expected: int | None = None
        self.failure: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        tail = b""
        try:
            while self.expected is None or self.replies < self.expected:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    raise ConnectionError("server closed the connection")
                data = tail + chunk
                lines = data.split(b"\r\n")
                tail = lines.pop()
                for line in lines:
                    if line[:1] == b"-":
                        self.errors += 1
                        if len(self.samples) < 5:
                            self.samples.append(line.decode(errors="replace")[:200])
                    elif line[:1] in (b"$", b"*"):  # a bulk/array reply: unexpected from write commands
                        self.errors += 1
                        if len(self.samples) < 5:
                            self.samples.append(f"unexpected reply {line[:40]!r}")
                self.replies += len(lines)
        except BaseException as exc:  # noqa: BLE001 - reported to the sending thread
            self.failure = exc
        finally:
            self.done.set()


def _commands(data: bytes) -> Iterator[list[tuple[int, int]]]:
    """Each RESP command array in ``data`` as the (start, end) byte spans of its arguments. Every command
    starts with ``*``; bulk strings are length-prefixed, so they are walked, never searched for."""
    i, size = 0, len(data)
    while i < size:
        if data[i:i + 1] != b"*":
            raise ValueError(f"malformed RESP at byte {i}: expected '*'")
        eol = data.index(b"\r\n", i)
        argc = int(data[i + 1:eol])
        i = eol + 2
        spans = []
        for _ in range(argc):
            eol = data.index(b"\r\n", i)
            start = eol + 2
            i = start + int(data[i + 1:eol])
            spans.append((start, i))
            i += 2
        yield spans


def count_commands(data: bytes) -> int:
    """Number of RESP commands in ``data``."""
    return sum(1 for _ in _commands(data))


def parse_commands(data: bytes) -> list[list[bytes]]:
    """The RESP commands in ``data`` (mass-insertion files), each as its list of arguments."""
    return [[data[a:b] for a, b in spans] for spans in _commands(data)]


def first_commands(data: bytes, n: int) -> list[list[bytes]]:
    """The first ``n`` RESP commands in ``data``, each as its list of arguments (the rest is not walked)."""
    return [[data[a:b] for a, b in spans] for spans, _ in zip(_commands(data), range(n), strict=False)]


def load_files(host: str, port: int, paths: Iterable[str | Path], *, expected: int, db: int | None = None,
               password: str | None = None, chunk: int = 4 << 20, timeout: float = 60.0) -> LoadResult:
    """Stream RESP files into Redis over one connection and count the replies.

    ``expected`` is the number of commands in the files (recorded when they were written). Raises
    RedisLoadError if the server is unreachable, drops the connection or acknowledges fewer commands."""
    started = time.perf_counter()
    prelude = b""
    pre_replies = 0
    if password:
        prelude += encode_command("AUTH", password)
        pre_replies += 1
    if db is not None:
        prelude += encode_command("SELECT", db)
        pre_replies += 1
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise RedisLoadError(f"redis at {host}:{port} unreachable: {exc}") from exc
    sent = 0
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = _ReplyCounter(sock)
        reader.expected = expected + pre_replies
        reader.start()
        try:
            if prelude:
                sock.sendall(prelude)
            from skyrec.progress import track

            paths = list(paths)
            for path in track(paths, f"loading redis {host}:{port}", total=len(paths), unit="files"):
                with open(path, "rb") as fh:
                    while block := fh.read(chunk):
                        if reader.failure is not None:
                            break
                        sock.sendall(block)
                        sent += len(block)
        except OSError as exc:
            raise RedisLoadError(f"redis at {host}:{port}: connection failed after {sent} bytes: {exc}") from exc
        if not reader.done.wait(timeout):
            raise RedisLoadError(f"redis at {host}:{port}: {reader.replies - pre_replies} of {expected} replies "
                                 f"after waiting {timeout}s")
    if reader.failure is not None:
        raise RedisLoadError(f"redis at {host}:{port}: {reader.failure} after {reader.replies - pre_replies} of "
                             f"{expected} replies") from reader.failure
    res = LoadResult(commands=reader.replies - pre_replies, errors=reader.errors, error_samples=reader.samples,
                     bytes=sent, seconds=time.perf_counter() - started)
    if res.errors:
        raise RedisLoadError(f"redis at {host}:{port} answered {res.errors} errors, e.g. {res.error_samples}",
                             res.error_samples)
    return res


def redis_cli_pipe(host: str, port: int, paths: Sequence[str | Path], *, db: int | None = None) -> LoadResult:
    """Load with ``redis-cli --pipe`` (the reference tool; used by the benchmark as the peer)."""
    started = time.perf_counter()
    args = ["redis-cli", "-h", host, "-p", str(port), "--pipe"]
    if db is not None:
        args[1:1] = ["-n", str(db)]
    total = 0
    cmds = 0
    for path in paths:
        with open(path, "rb") as fh:
            proc = subprocess.run(args, stdin=fh, capture_output=True, check=False)
        total += os.path.getsize(path)
        out = proc.stdout.decode(errors="replace")
        if proc.returncode != 0:
            raise RedisLoadError(f"redis-cli --pipe failed: {out[-300:]} {proc.stderr.decode()[-300:]}")
        for line in out.splitlines():
            if "replies:" in line:
                cmds += int(line.rsplit("replies:", 1)[1].strip())
    return LoadResult(commands=cmds, bytes=total, seconds=time.perf_counter() - started)


# ---- per-user recommendation values, vectorised -------------------------------------------------


def fixed_width_fragments(item_ids: Sequence[str]) -> np.ndarray:
    """``"item_id",`` for every item as a uint8 matrix padded with spaces to one width (JSON allows
    whitespace between a value and the comma), so that a batch of results can be laid out with array
    operations instead of per-item string formatting. Non-ASCII ids are escaped by ``json.dumps``."""
    import json

    frags = [json.dumps(str(i)) + "," for i in item_ids]
    width = max((len(f) for f in frags), default=1)
    out = np.full((len(frags), width), ord(" "), dtype=np.uint8)
    for j, f in enumerate(frags):
        out[j, :len(f)] = np.frombuffer(f.encode("ascii"), dtype=np.uint8)
    return out


def format_scores(scores: np.ndarray, decimals: int) -> np.ndarray:
    """Scores as fixed-width JSON numbers (uint8 [n, w]): sign next to the first digit, spaces before it,
    exactly ``decimals`` digits after the point (``" 0.12345"``, ``"-12.50000"``). The number is the packed
    encoding's (``codec.quantise``): scores too large for ``decimals`` are refused (ValueError), not written
    wrong; NaN (the padding after a list) formats as 0, so listed scores are checked finite first
    (``codec.check_finite_scores``)."""
    from skyrec.publish.codec import quantise

    q = quantise(scores, decimals)
    neg = q < 0
    a = np.abs(q)
    scale = 10 ** decimals
    ip, frac = np.divmod(a, scale)
    n_int = max(1, len(str(int(ip.max())))) if ip.size else 1
    width = 1 + n_int + (1 + decimals if decimals else 0)
    out = np.full((q.size, width), ord(" "), dtype=np.uint8)
    nd = np.ones(q.size, dtype=np.int64)  # significant integer digits of each score
    for j in range(n_int):
        pv = 10 ** (n_int - 1 - j)
        sig = (ip >= pv) | (j == n_int - 1)
        out[:, 1 + j] = np.where(sig, ord("0") + (ip // pv) % 10, ord(" "))
        if pv >= 10:
            nd += ip >= pv
    sign_col = n_int - nd  # the column just before the first significant digit
    rows = np.nonzero(neg)[0]
    out[rows, sign_col[rows]] = ord("-")
    if decimals:
        out[:, 1 + n_int] = ord(".")
        for j in range(decimals):
            out[:, 2 + n_int + j] = ord("0") + (frac // 10 ** (decimals - 1 - j)) % 10
    return out


def encode_rec_sets(key_prefix: str, user_ids: Sequence[str], fragments: np.ndarray, items: np.ndarray,
                    scores: np.ndarray, counts: np.ndarray, decimals: int) -> tuple[bytes, int]:
    """``SET <key_prefix><user> [[item, score], ...]`` for every user with ``counts > 0``.

    ``items``/``scores`` are [b, k] (candidate rows of ``fragments``, best first); values are laid out as a
    [b, 1 + k * (e + 1)] byte matrix (``[`` then per item ``[frag score]`` and ``,``; the comma after the
    last item becomes ``]``), so the per-item work is array operations; only the short RESP header is
    formatted per user. Returns (bytes, number of commands). Listed scores that are NaN or +-inf are refused
    (``codec.NonFiniteScores``, a ValueError naming the first few keys), as are scores too large for
    ``decimals``: no value is written with a wrong number."""
    from skyrec.publish.codec import check_finite_scores

    b, k = items.shape
    has = np.nonzero(counts > 0)[0]
    if has.size == 0:
        return b"", 0
    check_finite_scores(scores, counts, key=lambda r: key_prefix + user_ids[r])
    wi = fragments.shape[1]
    sc = format_scores(scores[has].reshape(-1), decimals)
    ws = sc.shape[1]
    e = 1 + wi + ws + 1  # [frag score]
    rows = np.empty((has.size, k, e + 1), dtype=np.uint8)
    rows[:, :, 0] = ord("[")
    rows[:, :, 1:1 + wi] = fragments[np.maximum(items[has], 0)]
    rows[:, :, 1 + wi:1 + wi + ws] = sc.reshape(has.size, k, ws)
    rows[:, :, e - 1] = ord("]")
    rows[:, :, e] = ord(",")
    flat = rows.reshape(has.size, k * (e + 1))
    c = counts[has].astype(np.int64)
    flat[np.arange(has.size), c * (e + 1) - 1] = ord("]")
    lengths = 1 + c * (e + 1)  # with the leading "["
    buf = flat.tobytes()
    stride = k * (e + 1)
    prefix = key_prefix.encode()
    pieces: list[bytes] = []
    append = pieces.append
    for n, (r, ln) in enumerate(zip(has.tolist(), lengths.tolist(), strict=True)):
        key = prefix + user_ids[r].encode()
        append(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n[" % (len(key), key, ln))
        append(buf[n * stride:n * stride + ln - 1])
        append(b"\r\n")
    return b"".join(pieces), int(has.size)


# ---- packed values (``skyrec.publish.codec``) and their SET commands in one compiled pass -----------------


def _compiled(fn: Any) -> Any:
    import numba

    try:
        return numba.njit(nogil=True, cache=True)(fn)
    except RuntimeError:  # no cache locator: compile once per process
        return numba.njit(nogil=True)(fn)


def _digits_impl(out: np.ndarray, o: int, v: int) -> int:  # pragma: no cover - compiled
    """ASCII decimal of ``v >= 0`` at ``out[o:]``; returns the position after it."""
    n = 1
    t = v
    while t >= 10:
        t //= 10
        n += 1
    for j in range(n - 1, -1, -1):
        out[o + j] = 48 + v % 10
        v //= 10
    return o + n


def _varint_impl(out: np.ndarray, o: int, v: np.uint64) -> int:  # pragma: no cover - compiled
    while v >= 0x80:
        out[o] = (v & 0x7F) | 0x80
        v >>= np.uint64(7)
        o += 1
    out[o] = v
    return o + 1


def _varint_len_impl(v: np.uint64) -> int:  # pragma: no cover - compiled
    n = 1
    while v >= 0x80:
        v >>= np.uint64(7)
        n += 1
    return n


_digits = _compiled(_digits_impl)
_varint = _compiled(_varint_impl)
_varint_len = _compiled(_varint_len_impl)


def _packed_sets_impl(head: np.ndarray, prefix: np.ndarray, uoff: np.ndarray, udata: np.ndarray, items: np.ndarray,
                      q: np.ndarray, counts: np.ndarray, table_size: int,
                      out: np.ndarray) -> tuple[int, int, int, int]:  # pragma: no cover
    """RESP ``SET <prefix><user> <packed value>`` for rows with ``counts > 0``. Returns (bytes, commands, error,
    row): error 1 = a position outside the table, 2 = scores increase along the list."""
    b, k = items.shape
    wide = table_size > 0x10000
    iw = 4 if wide else 2
    o = 0
    cmds = 0
    for r in range(b):
        n = counts[r]
        if n <= 0:
            continue
        top = 0
        for j in range(n):
            p = items[r, j]
            if p < 0 or p >= table_size:
                return 0, cmds, 1, r
            if j > 0:
                g = q[r, j - 1] - q[r, j]
                if g < 0:
                    return 0, cmds, 2, r
                top = max(top, g)
        code = 0 if top < 256 else (1 if top < 65536 else (2 if top < 4294967296 else 3))
        gw = 1 << code
        q0 = q[r, 0]
        zig = np.uint64(q0 * 2) if q0 >= 0 else np.uint64(-q0 * 2 - 1)
        vlen = 2 + _varint_len(np.uint64(n)) + n * iw + _varint_len(zig) + (n - 1) * gw
        klen = prefix.size + uoff[r + 1] - uoff[r]
        out[o:o + head.size] = head
        o += head.size
        o = _digits(out, o, klen)
        out[o] = 13
        out[o + 1] = 10
        o += 2
        out[o:o + prefix.size] = prefix
        o += prefix.size
        ulen = uoff[r + 1] - uoff[r]
        out[o:o + ulen] = udata[uoff[r]:uoff[r + 1]]
        o += ulen
        out[o] = 13
        out[o + 1] = 10
        out[o + 2] = 36  # '$'
        o = _digits(out, o + 3, vlen)
        out[o] = 13
        out[o + 1] = 10
        o += 2
        out[o] = 0x01
        out[o + 1] = (1 if wide else 0) | (code << 1)
        o = _varint(out, o + 2, np.uint64(n))
        for j in range(n):
            p = items[r, j]
            for t in range(iw):
                out[o + t] = (p >> (8 * t)) & 0xFF
            o += iw
        o = _varint(out, o, zig)
        for j in range(1, n):
            g = q[r, j - 1] - q[r, j]
            for t in range(gw):
                out[o + t] = (g >> (8 * t)) & 0xFF
            o += gw
        out[o] = 13
        out[o + 1] = 10
        o += 2
        cmds += 1
    return o, cmds, 0, -1


_packed_sets = _compiled(_packed_sets_impl)
_SET_HEAD = np.frombuffer(b"*3\r\n$3\r\nSET\r\n$", dtype=np.uint8)


def encode_packed_rec_sets(key_prefix: str, user_ids: pa.Array, items: np.ndarray, scores: np.ndarray,
                           counts: np.ndarray, decimals: int, table_size: int) -> tuple[bytes, int]:
    """``skyrec.publish.codec.encode_packed_sets``, byte for byte, in one compiled pass that holds no GIL:
    the keys come from the Arrow buffers of ``user_ids`` (a string array, one per row of ``items``), the
    values and their RESP framing are written straight into one buffer (no per-user Python). Same errors
    (ValueError) for positions outside the item table, lists not best first, listed scores that are not finite
    (``codec.NonFiniteScores``, naming the first few keys), scores too large to quantise."""
    from skyrec.publish.codec import check_finite_scores, quantise

    b, k = items.shape
    if len(user_ids) != b:
        raise ValueError(f"{len(user_ids)} user ids for {b} rows")
    counts = np.ascontiguousarray(counts, dtype=np.int64)
    if b == 0:
        return b"", 0
    if counts.min() < 0 or counts.max() > k:
        raise ValueError(f"counts must be within 0..{k}")
    arr = user_ids.cast(pa.string()) if user_ids.type != pa.string() else user_ids
    if arr.null_count:
        raise ValueError("user ids must not be null")
    bufs = arr.buffers()
    uoff = np.frombuffer(bufs[1], dtype=np.int32, count=len(arr) + 1, offset=arr.offset * 4).astype(np.int64)
    udata = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, dtype=np.uint8)
    prefix = np.frombuffer(key_prefix.encode(), dtype=np.uint8)
    valid = np.arange(k)[None, :] < counts[:, None]
    check_finite_scores(scores, counts, valid=valid, key=lambda r: key_prefix + str(arr[r].as_py()))
    q = np.where(valid, quantise(scores, decimals), 0)
    keys_max = int(uoff[-1] - uoff[0]) + b * prefix.size
    out = np.empty(keys_max + b * (13 + 20 + 2 + 2 + 1 + 20 + 2 + 2 + 10 + 10 + k * 4 + k * 8 + 2), dtype=np.uint8)
    size, cmds, err, row = _packed_sets(_SET_HEAD, prefix, uoff, udata, np.ascontiguousarray(items, dtype=np.int64), q,
                                        counts, int(table_size), out)
    if err == 1:
        raise ValueError(f"item positions must be within the item table (0..{table_size - 1})")
    if err == 2:
        raise ValueError(f"list of batch row {row} is not best first (scores increase)")
    return out[:size].tobytes(), int(cmds)
