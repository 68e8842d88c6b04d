"""Redis RDB files written directly from the mass-insertion (RESP) files, without a Redis round trip.

``create_redis_dump`` used to load every RESP command into a scratch ``redis-server`` and have it ``BGSAVE``;
at millions of keys that is Redis parsing and executing one command per key. An RDB file is a much simpler
thing to produce: a header, a database selector, one ``(type, key, value)`` record per key, an end marker and
a CRC-64 of everything before it. ``write_rdb`` converts the publication's files into one:

- the per-user/per-item files (``rec``, ``hist``, ``sim`` keys) hold only ``SET key value`` commands; a compiled
  pass (Numba) rewrites each command into a string record (``0x00 <len key> <len value>``), and any byte
  that is not a well-formed ``SET`` fails the conversion naming the file and the byte offset;
- the meta file's few commands (``SET`` of the fallback list, ``HSET`` chunks of the items hash, ``SADD``
  of the users sample) are applied in Python with Redis's semantics (a later field or member replaces or
  joins an earlier one) and written as one string, hash or set record per key.

Format (Redis's ``rdb.h``, RDB version 9, read by Redis 5 and later): ``REDIS0009``, ``SELECTDB 0``,
``RESIZEDB <keys> 0`` (the loader sizes its table once), the records, ``EOF`` (``0xFF``) and the CRC-64
(Jones polynomial, reflected, as ``redis/src/crc64.c``) of all preceding bytes, little-endian. Lengths use
RDB's length encoding (6-bit, 14-bit big-endian, or ``0x80`` + 32-bit big-endian). Values are written raw
(no LZF), as ``rdbcompression no`` would. The caller proves the file: a scratch ``redis-server`` loads it
(refusing a bad checksum, a duplicated key or a malformed record), then key count and probe values are
checked against the predictions.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numba
import numpy as np

RDB_VERSION = 9
MAGIC = b"REDIS%04d" % RDB_VERSION
OP_SELECTDB, OP_RESIZEDB, OP_EOF = 0xFE, 0xFB, 0xFF
TYPE_STRING, TYPE_SET, TYPE_HASH = 0, 2, 4
_POLY = 0x95AC9329AC4BC9B5  # 0xad93d23594c935a9 (Redis's CRC-64 "Jones" polynomial), bit-reflected


class RdbError(ValueError):
    """A mass-insertion file cannot be converted (names the file and what is wrong)."""


def _tables() -> np.ndarray:
    """Slicing-by-8 tables of the reflected CRC-64: t[0] is the byte table, t[j][b] = t[0] applied j more times."""
    t = np.zeros((8, 256), dtype=np.uint64)
    for b in range(256):
        c = b
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        t[0, b] = c
    for j in range(1, 8):
        for b in range(256):
            prev = int(t[j - 1, b])
            t[j, b] = (prev >> 8) ^ int(t[0, prev & 0xFF])
    return t


_TABLES = _tables()


def _compiled(fn: Any) -> Any:
    try:
        return numba.njit(nogil=True, cache=True)(fn)
    except RuntimeError:  # no cache locator: compile once per process
        return numba.njit(nogil=True)(fn)


@_compiled
def _crc64(crc: np.uint64, data: np.ndarray, t: np.ndarray) -> np.uint64:  # pragma: no cover - compiled
    n = data.size
    i = 0
    c = np.uint64(crc)
    m = np.uint64(0xFF)
    while i + 8 <= n:
        w = np.uint64(0)
        for j in range(8):
            w |= np.uint64(data[i + j]) << np.uint64(8 * j)
        c ^= w
        c = (t[7, c & m] ^ t[6, (c >> np.uint64(8)) & m] ^ t[5, (c >> np.uint64(16)) & m]
             ^ t[4, (c >> np.uint64(24)) & m] ^ t[3, (c >> np.uint64(32)) & m] ^ t[2, (c >> np.uint64(40)) & m]
             ^ t[1, (c >> np.uint64(48)) & m] ^ t[0, c >> np.uint64(56)])
        i += 8
    while i < n:
        c = t[0, (c ^ np.uint64(data[i])) & m] ^ (c >> np.uint64(8))
        i += 1
    return c


def crc64(data: bytes | bytearray | memoryview | np.ndarray, crc: int = 0) -> int:
    """Redis's CRC-64 of ``data`` continuing from ``crc`` (``crc64(b"123456789") == 0xe9c6d914c4b8d9ca``)."""
    arr = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8).ravel()
    return int(_crc64(np.uint64(crc), arr, _TABLES))


@_compiled
def _put_len(out: np.ndarray, o: int, n: int) -> int:  # pragma: no cover - compiled
    if n < 64:
        out[o] = n
        return o + 1
    if n < 16384:
        out[o] = 0x40 | (n >> 8)
        out[o + 1] = n & 0xFF
        return o + 2
    if n < 4294967296:
        out[o] = 0x80
        for j in range(4):
            out[o + 1 + j] = (n >> (24 - 8 * j)) & 0xFF
        return o + 5
    out[o] = 0x81
    for j in range(8):
        out[o + 1 + j] = (n >> (56 - 8 * j)) & 0xFF
    return o + 9


@_compiled
def _bulk(data: np.ndarray, i: int) -> tuple[int, int]:  # pragma: no cover - compiled
    """The bulk string at ``i`` (``$<len>\\r\\n<bytes>\\r\\n``): (start of its bytes, its length), or (-1, i) if
    malformed at ``i``."""
    n = data.size
    if i >= n or data[i] != 36:  # '$'
        return -1, i
    j = i + 1
    length = 0
    digits = 0
    while j < n and 48 <= data[j] <= 57 and digits < 12:
        length = length * 10 + (data[j] - 48)
        j += 1
        digits += 1
    if digits == 0 or j + 1 >= n or data[j] != 13 or data[j + 1] != 10:
        return -1, j
    start = j + 2
    end = start + length
    if end + 2 > n:
        return -1, start
    if data[end] != 13 or data[end + 1] != 10:
        return -1, end
    return start, length


@_compiled
def _sets_to_records(data: np.ndarray, head: np.ndarray, out: np.ndarray) -> tuple[int, int, int]:  # pragma: no cover
    """Rewrite ``SET k v`` commands into RDB string records. Returns (bytes written, commands, -1) or
    (0, commands so far, byte offset of the first malformed command)."""
    n = data.size
    h = head.size
    i = 0
    o = 0
    cmds = 0
    while i < n:
        if i + h > n:
            return 0, cmds, i
        for j in range(h):
            if data[i + j] != head[j]:
                return 0, cmds, i
        ks, kl = _bulk(data, i + h)
        if ks < 0:
            return 0, cmds, kl
        vs, vl = _bulk(data, ks + kl + 2)
        if vs < 0:
            return 0, cmds, vl
        out[o] = 0
        o = _put_len(out, o + 1, kl)
        out[o:o + kl] = data[ks:ks + kl]
        o = _put_len(out, o + kl, vl)
        out[o:o + vl] = data[vs:vs + vl]
        o += vl
        i = vs + vl + 2
        cmds += 1
    return o, cmds, -1


_SET_HEAD = np.frombuffer(b"*3\r\n$3\r\nSET\r\n", dtype=np.uint8)


def _length(n: int) -> bytes:
    if n < 64:
        return bytes((n,))
    if n < 16384:
        return bytes((0x40 | (n >> 8), n & 0xFF))
    if n < 1 << 32:
        return b"\x80" + struct.pack(">I", n)
    return b"\x81" + struct.pack(">Q", n)


def _string(b: bytes) -> bytes:
    return _length(len(b)) + b


def set_records(data: bytes | np.ndarray, name: str = "<data>") -> tuple[bytes, int]:
    """The RDB string records of a file of ``SET key value`` commands: (records, commands). RdbError naming
    ``name`` and the byte offset at the first byte that is not a well-formed SET command."""
    arr = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    if arr.size == 0:
        return b"", 0
    out = np.empty(arr.size, dtype=np.uint8)  # a record is never longer than its RESP command
    size, cmds, bad = _sets_to_records(arr, _SET_HEAD, out)
    if bad >= 0:
        snippet = bytes(arr[bad:bad + 24]).decode("latin-1")
        raise RdbError(f"{name}: errors in the mass-insertion file: byte {bad} (after {cmds} commands) is not a "
                       f"well-formed 'SET key value' command: {snippet!r}")
    return out[:size].tobytes(), int(cmds)


def meta_records(data: bytes, name: str = "meta.resp") -> tuple[bytes, int, int]:
    """The RDB records of a file of SET/HSET/SADD commands, with Redis's semantics (a later SET or hash field
    replaces an earlier one, SADD members join): (records, commands, keys)."""
    from skyrec.publish.resp import parse_commands

    try:
        commands = parse_commands(data)
    except (ValueError, IndexError) as exc:
        raise RdbError(f"{name}: errors in the mass-insertion file: {exc}") from None
    strings: dict[bytes, bytes] = {}
    hashes: dict[bytes, dict[bytes, bytes]] = {}
    sets: dict[bytes, dict[bytes, None]] = {}
    order: dict[bytes, None] = {}
    for n, args in enumerate(commands):
        verb = args[0].upper() if args else b""
        key = args[1] if len(args) > 1 else b""
        kinds = [k for k, d in (("string", strings), ("hash", hashes), ("set", sets)) if key in d]
        if verb == b"SET" and len(args) == 3:
            kind = "string"
            strings[key] = args[2]
        elif verb == b"HSET" and len(args) >= 4 and len(args) % 2 == 0:
            kind = "hash"
            h = hashes.setdefault(key, {})
            for f, v in zip(args[2::2], args[3::2], strict=True):
                h[f] = v
        elif verb == b"SADD" and len(args) >= 3:
            kind = "set"
            sets.setdefault(key, {}).update(dict.fromkeys(args[2:]))
        else:
            raise RdbError(f"{name}: errors in the mass-insertion file: command {n} "
                           f"({b' '.join(args[:2])[:60]!r}...) is not SET/HSET/SADD with its arguments")
        if kinds and kinds != [kind]:
            raise RdbError(f"{name}: command {n}: key {key[:80]!r} written as a {kind} and as a {kinds[0]}")
        order[key] = None
    out = bytearray()
    for key in order:
        if key in strings:
            out += b"\x00" + _string(key) + _string(strings[key])
        elif key in hashes:
            out += bytes((TYPE_HASH,)) + _string(key) + _length(len(hashes[key]))
            for f, v in hashes[key].items():
                out += _string(f) + _string(v)
        else:
            out += bytes((TYPE_SET,)) + _string(key) + _length(len(sets[key]))
            for m in sets[key]:
                out += _string(m)
    return bytes(out), len(commands), len(order)


@dataclass
class RdbResult:
    commands: int  # RESP commands converted
    keys: int  # records written (keys of the database)
    bytes: int
    crc64: int


def write_rdb(out: BinaryIO, meta_file: str | Path, set_files: Iterable[str | Path], *, keys_hint: int) -> RdbResult:
    """Write one RDB (db 0) holding the keys of ``meta_file`` (SET/HSET/SADD) and of ``set_files`` (SET only),
    file by file (memory: one file and its records). ``keys_hint``: the expected key count (RESIZEDB)."""
    crc = 0
    written = 0

    def emit(b: bytes) -> None:
        nonlocal crc, written
        out.write(b)
        crc = crc64(b, crc)
        written += len(b)

    emit(MAGIC + bytes((OP_SELECTDB, 0, OP_RESIZEDB)) + _length(max(0, keys_hint)) + _length(0))
    records, commands, keys = meta_records(Path(meta_file).read_bytes(), Path(meta_file).name)
    emit(records)
    for path in set_files:
        data = np.fromfile(path, dtype=np.uint8)
        recs, n = set_records(data, Path(path).name)
        del data
        emit(recs)
        commands += n
        keys += n  # one record per SET: a key set twice would be refused by the loader (duplicate key)
    emit(bytes((OP_EOF,)))
    out.write(struct.pack("<Q", crc))
    return RdbResult(commands=commands, keys=keys, bytes=written + 8, crc64=crc)
