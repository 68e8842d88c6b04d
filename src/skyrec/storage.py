"""The lake: fsspec storage with the commit protocol.

Layout of one committed output (a "dataset version") at ``<lake>/<dataset path>/``::

    _attempts/<attempt token>/...     data files written by one attempt (staging, unique per attempt)
    _manifest/000000.json             the commit: create-only; lists files, sizes, sha256, rows, producer
    _manifest/000001.json             a forced re-run commits a new revision (create-only too)

An attempt writes only inside its own ``_attempts/<token>/`` folder, so concurrent attempts never touch
each other's files. It commits by *creating* the next manifest revision; if another attempt created it
first, the commit is refused and the loser's staging is discarded. Readers resolve files only through
the highest committed manifest revision, so they never see a partial or mixed output. Nothing is ever
"delete the target, then write".
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from skyrec.config import Config, ConfigError

MANIFEST_DIR = "_manifest"
ATTEMPTS_DIR = "_attempts"
QUARANTINE_DIR = "_quarantine"
ATTEMPT_MARKER = "_attempt.json"  # in each attempt folder: who writes there (for the collector)
_REVISION = re.compile(r"^(\d{6})\.json$")


class StorageError(RuntimeError):
    pass


class CorruptPointer(StorageError, ValueError):
    """A pointer whose content cannot be what ``write_pointer`` wrote (truncated, edited by hand). A ValueError
    too: bad input for the job that reads it, not retried; a new publication replaces it."""

    def __init__(self, rel: str, why: str) -> None:
        super().__init__(f"pointer {rel} is corrupt: {why}; a new publication (or restoring it by hand) replaces it")
        self.rel = rel


class AlreadyCommitted(StorageError):
    """The output was committed already (by this or a concurrent attempt)."""

    def __init__(self, path: str, manifest: Manifest | None = None) -> None:
        super().__init__(f"{path}: already committed")
        self.path = path
        self.manifest = manifest


class IntegrityError(StorageError):
    """A committed output does not match its manifest (missing file, size or checksum mismatch)."""


@dataclass(frozen=True)
class Producer:
    """Who produced an output. ``job_key`` is stable across attempts; ``attempt`` is not."""

    dag_id: str = "manual"
    run_id: str = "manual"
    task_id: str = "manual"
    try_number: int = 1
    job_key: str = ""
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)

    @property
    def attempt_token(self) -> str:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{self.task_id}.try{self.try_number}")
        return f"{safe}.{uuid.uuid4().hex[:12]}"


@dataclass
class FileEntry:
    path: str  # relative to the output folder
    size: int
    sha256: str
    rows: int | None = None


@dataclass
class Manifest:
    dataset: str
    path: str  # lake-relative output folder
    revision: int
    committed_at: str
    producer: dict[str, Any]
    files: list[FileEntry]
    rows: int
    meta: dict[str, Any] = field(default_factory=dict)
    quarantine: dict[str, int] = field(default_factory=dict)
    # Unique per commit call: lets a committer whose create-only request was answered "exists" (a retried
    # request whose first response was lost) recognise the manifest as its own. Empty in old manifests.
    commit_id: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        raw = json.loads(text)
        raw["files"] = [FileEntry(**f) for f in raw["files"]]
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def file(self, name: str) -> FileEntry:
        for f in self.files:  # the path as written (an attempt's staging folder before it), then the bare name
            if f.path == name or f.path.endswith(f"/{name}"):
                return f
        for f in self.files:
            if f.path.rsplit("/", 1)[-1] == name:
                return f
        raise KeyError(f"{self.path}: no file {name!r} in manifest (has {[f.path for f in self.files]})")

    @property
    def key(self) -> str:
        """The last path component (e.g. ``run=20261123T190000``)."""
        return self.path.rstrip("/").rsplit("/", 1)[-1]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class Lake:
    """A lake rooted at a local folder or an fsspec URL (gs://, s3://, memory://)."""

    def __init__(self, root: str, storage_options: dict[str, Any] | None = None) -> None:
        self.fs, path = fsspec.core.url_to_fs(root, **(storage_options or {}))
        self.root = path.rstrip("/")
        self.is_local = isinstance(self.fs, LocalFileSystem)
        if self.is_local:
            os.makedirs(self.root, exist_ok=True)

    @classmethod
    def from_config(cls, config: Config) -> Lake:
        return cls(config.lake_url, config.storage.storage_options)

    # ---- paths ---------------------------------------------------------------------------------
    def abspath(self, rel: str) -> str:
        return f"{self.root}/{rel.strip('/')}" if rel else self.root

    def url(self, rel: str) -> str:
        """Full path usable with ``self.fs`` (and with pyarrow via ``filesystem=self.fs``)."""
        return self.abspath(rel)

    # ---- reading committed outputs ------------------------------------------------------------
    def _fresh(self, full: str) -> None:
        """Forget what this process's filesystem object cached about ``full`` (listings, file info).

        fsspec shares one filesystem instance per process and object-store implementations cache
        directory listings on it, so a long-lived reader (the API, a scheduler) would go on seeing the
        revisions it listed first. Every read that decides *which* committed output or revision to use
        looks at the store itself.
        """
        if not self.is_local:
            self.fs.invalidate_cache(full)

    def _ls(self, full: str, *, detail: bool) -> list[Any]:
        self._fresh(full)
        return self.fs.ls(full, detail=detail)

    def _revisions(self, rel: str) -> list[int]:
        mdir = self.abspath(f"{rel}/{MANIFEST_DIR}")
        try:
            names = [p.rsplit("/", 1)[-1] for p in self._ls(mdir, detail=False)]
        except FileNotFoundError:
            return []
        return sorted(int(m.group(1)) for n in names if (m := _REVISION.match(n)))

    def revisions(self, rel: str) -> list[int]:
        """The committed revisions of the output at ``rel``, oldest first (empty: not committed)."""
        return self._revisions(rel)

    def read_manifest(self, rel: str, revision: int) -> Manifest | None:
        """One revision's manifest, read from the store (None if it does not exist)."""
        full = self.abspath(f"{rel}/{MANIFEST_DIR}/{revision:06d}.json")
        self._fresh(full)
        try:
            with self.fs.open(full, "rb") as fh:
                return Manifest.from_json(fh.read().decode())
        except FileNotFoundError:
            return None

    def manifest(self, rel: str) -> Manifest | None:
        """The committed manifest of the output at ``rel`` (highest revision), or None."""
        revs = self._revisions(rel)
        if not revs:
            return None
        return self.read_manifest(rel, revs[-1])

    def committed(self, rel: str) -> bool:
        return bool(self._revisions(rel))

    def require(self, rel: str) -> Manifest:
        m = self.manifest(rel)
        if m is None:
            raise StorageError(f"{self.abspath(rel)}: no committed output (no manifest)")
        return m

    def files(self, manifest: Manifest) -> list[str]:
        return [self.abspath(f"{manifest.path}/{f.path}") for f in manifest.files]

    def file_url(self, manifest: Manifest, name: str) -> str:
        return self.abspath(f"{manifest.path}/{manifest.file(name).path}")

    def open(self, manifest: Manifest, name: str, mode: str = "rb") -> IO[Any]:
        return self.fs.open(self.file_url(manifest, name), mode)

    def versions(self, prefix: str, *, committed_only: bool = True) -> list[str]:
        """Lake-relative output folders directly under ``prefix``, sorted by name (run keys sort by time)."""
        base = self.abspath(prefix.rstrip("/"))
        try:
            entries = self._ls(base, detail=True)
        except FileNotFoundError:
            return []
        rels = []
        for e in entries:
            if e.get("type") != "directory":
                continue
            name = e["name"].rstrip("/").rsplit("/", 1)[-1]
            if name.startswith("_"):
                continue
            rel = f"{prefix.rstrip('/')}/{name}"
            if not committed_only or self.committed(rel):
                rels.append(rel)
        return sorted(rels)

    def history(self, config: Config, dataset: str, *, limit: int | None = None, before: str | None = None,
                **fields: str) -> list[Manifest]:
        """Committed versions of ``dataset`` (oldest first), optionally only those before output ``before``."""
        prefix = config.dataset_prefix(dataset, **fields)
        if not prefix.endswith("/"):
            prefix = prefix.rsplit("/", 1)[0] + "/" if "/" in prefix else ""
        rels = self.versions(prefix)
        if before is not None:
            rels = [r for r in rels if r < before]
        if limit is not None:
            rels = rels[-limit:]
        out = []
        for r in rels:
            m = self.manifest(r)
            if m is not None:
                out.append(m)
        return out

    def latest(self, config: Config, dataset: str, **fields: str) -> Manifest | None:
        hist = self.history(config, dataset, limit=1, **fields)
        return hist[-1] if hist else None

    def verify(self, manifest: Manifest, *, checksums: bool = True) -> None:
        """Post-condition: every file listed exists with the recorded size (and checksum)."""
        for entry in manifest.files:
            full = self.abspath(f"{manifest.path}/{entry.path}")
            self._fresh(full)
            try:
                size = self.fs.size(full)
            except FileNotFoundError:
                raise IntegrityError(f"{full}: listed in manifest but missing") from None
            if size != entry.size:
                raise IntegrityError(f"{full}: size {size} != manifest {entry.size}")
            if checksums and _sha256(self.fs, full) != entry.sha256:
                raise IntegrityError(f"{full}: checksum does not match manifest")

    # ---- writing -------------------------------------------------------------------------------
    def stage(self, dataset: str, rel: str, producer: Producer, *, force: bool = False) -> Stage:
        """Open a staging area for the output at ``rel``. Raises AlreadyCommitted unless ``force``."""
        existing = self.manifest(rel)
        if existing is not None and not force:
            raise AlreadyCommitted(self.abspath(rel), existing)
        return Stage(self, dataset, rel, producer, base_revision=existing.revision + 1 if existing else 0)

    def create_only(self, full: str, data: bytes) -> bool:
        """Create ``full`` with ``data`` only if it does not exist. True if we created it."""
        self.fs.makedirs(full.rsplit("/", 1)[0], exist_ok=True)
        if self.is_local:
            tmp = _synced_temp(full, data)
            try:
                os.link(tmp, full)  # atomic, fails if the name exists; the content is complete before
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        try:  # object stores: conditional create (S3 If-None-Match, GCS ifGenerationMatch=0)
            with self.fs.open(full, "xb") as fh:
                fh.write(data)
            return True
        except FileExistsError:
            return False

    def write_pointer(self, rel: str, payload: dict[str, Any]) -> None:
        """Atomically replace a small JSON pointer (e.g. the published model). Points at committed outputs only."""
        target = payload.get("path")
        if target is not None and not self.committed(target):
            raise StorageError(f"refusing to point {rel} at {target}: not committed")
        full = self.abspath(rel)
        data = json.dumps(payload, indent=1, sort_keys=True).encode()
        self.fs.makedirs(full.rsplit("/", 1)[0], exist_ok=True)
        if self.is_local:
            os.replace(_synced_temp(full, data), full)
        else:
            self.fs.pipe_file(full, data)  # single-object PUT is atomic on object stores

    def read_pointer(self, rel: str) -> dict[str, Any] | None:
        """The pointer at ``rel`` (None: there is none). A pointer whose content is not a JSON object naming
        a ``path`` (truncated, edited by hand) is CorruptPointer: never read as "nothing published"."""
        full = self.abspath(rel)
        self._fresh(full)
        try:
            with self.fs.open(full, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            return None
        try:
            payload = json.loads(raw)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            raise CorruptPointer(rel, f"not JSON ({exc})") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("path"), str):
            raise CorruptPointer(rel, f"not an object naming a path: {raw[:120]!r}")
        return payload

    # ---- collecting abandoned attempts --------------------------------------------------------
    def collect(self, rel: str, *, grace_seconds: float, is_live: LiveCheck | None = None,
                dry_run: bool = False, now: float | None = None) -> list[str]:
        """Remove what dead attempts left in the output at ``rel``; returns the lake paths removed.

        An attempt folder is removed only when (1) no committed manifest revision references it, (2) its
        newest file is older than ``grace_seconds`` (longer than any job may run: a job past its deadline
        is cancelled), and (3) its producer is not alive (``is_live``, by default: same host and the
        process still exists). Temporary files a killed commit left in ``_manifest/`` go after the grace
        period. Never a file a manifest lists, never a live attempt's staging.
        """
        now = time.time() if now is None else now
        live = is_live or process_alive
        keep: set[str] = set()
        for rev in self._revisions(rel):
            m = self.read_manifest(rel, rev)
            if m is None:  # listed a moment ago, unreadable now: do not guess
                return []
            keep.update(f.path.split("/")[1] for f in m.files if f.path.startswith(ATTEMPTS_DIR + "/"))
        removed: list[str] = []
        base = self.abspath(f"{rel}/{ATTEMPTS_DIR}")
        try:
            tokens = [e["name"].rstrip("/").rsplit("/", 1)[-1] for e in self._ls(base, detail=True)]
        except FileNotFoundError:
            tokens = []
        for token in tokens:
            if token in keep:
                continue
            folder = f"{base}/{token}"
            newest, marker = self._attempt_facts(folder)
            if newest is not None and now - newest < grace_seconds:
                continue
            if marker is not None and live(marker):
                continue
            if not dry_run:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm(folder, recursive=True)
            removed.append(f"{rel}/{ATTEMPTS_DIR}/{token}")
        mdir = self.abspath(f"{rel}/{MANIFEST_DIR}")
        try:
            entries = self._ls(mdir, detail=True)
        except FileNotFoundError:
            entries = []
        for e in entries:
            name = e["name"].rstrip("/").rsplit("/", 1)[-1]
            if _REVISION.match(name) or ".tmp." not in name:
                continue
            mtime = _mtime(e)
            if mtime is not None and now - mtime < grace_seconds:
                continue
            if not dry_run:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm(e["name"])
            removed.append(f"{rel}/{MANIFEST_DIR}/{name}")
        return removed

    def _attempt_facts(self, folder: str) -> tuple[float | None, dict[str, Any] | None]:
        """(newest modification time of any file in an attempt folder, its attempt marker or None)."""
        self._fresh(folder)
        try:
            found = self.fs.find(folder, detail=True)
        except FileNotFoundError:
            return None, None
        times = [t for info in found.values() if (t := _mtime(info)) is not None]
        marker = None
        with contextlib.suppress(FileNotFoundError, ValueError):
            with self.fs.open(f"{folder}/{ATTEMPT_MARKER}", "rb") as fh:
                marker = json.loads(fh.read())
        if not times and not found:  # an empty folder (object stores hold none; a local one may)
            with contextlib.suppress(FileNotFoundError):
                t = _mtime(self.fs.info(folder))
                times = [t] if t is not None else []
        return (max(times) if times else None), marker

    def collect_all(self, config: Config, *, grace_seconds: float, is_live: LiveCheck | None = None,
                    dry_run: bool = False) -> list[str]:
        """``collect`` over every output of every dataset the config declares."""
        removed: list[str] = []
        for template in config.datasets.values():
            pattern = re.sub(r"\{[^}]+\}", "*", template.strip("/"))
            try:
                folders = self.fs.glob(self.abspath(f"{pattern}/{ATTEMPTS_DIR}")) + \
                    self.fs.glob(self.abspath(f"{pattern}/{MANIFEST_DIR}"))
            except FileNotFoundError:
                continue
            outputs = sorted({f.rstrip("/").rsplit("/", 1)[0] for f in folders})
            for full in outputs:
                rel = full[len(self.root):].strip("/")
                removed += self.collect(rel, grace_seconds=grace_seconds, is_live=is_live, dry_run=dry_run)
        return removed


LiveCheck = Any  # Callable[[dict[str, Any]], bool]: given an attempt marker, is its producer alive?


def process_alive(marker: dict[str, Any]) -> bool:
    """Default liveness: the producer ran on this host and its process (same start time) still exists.

    A producer on another host cannot be checked from here; the grace period decides for it.
    """
    if marker.get("host") != socket.gethostname():
        return False
    pid = int(marker.get("pid") or 0)
    if pid <= 0:
        return False
    started = _process_start(pid)
    if started is None:
        return False
    recorded = marker.get("proc_start")
    return recorded is None or recorded == started


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (tells a live process from a new one with a reused pid)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode(errors="replace")
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return "unknown"
        return "unknown"


def _mtime(info: dict[str, Any]) -> float | None:
    for key in ("mtime", "LastModified", "updated", "last_modified", "created"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, dt.datetime):
            return value.timestamp()
        with contextlib.suppress(ValueError):
            return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    return None


def _sha256(fs: Any, full: str) -> str:
    h = hashlib.sha256()
    with fs.open(full, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Stage:
    """Staging area of one attempt for one output. Write files, then ``commit()``; or ``discard()``."""

    def __init__(self, lake: Lake, dataset: str, rel: str, producer: Producer, *, base_revision: int) -> None:
        self.lake = lake
        self.dataset = dataset
        self.rel = rel.strip("/")
        self.producer = producer
        self.token = producer.attempt_token
        self.staging_rel = f"{ATTEMPTS_DIR}/{self.token}"
        self.base_revision = base_revision
        self._rows: dict[str, int | None] = {}
        self.quarantine_counts: dict[str, int] = {}
        self.committed_manifest: Manifest | None = None
        self._uncertain = False
        self.lake.fs.makedirs(self.path(""), exist_ok=True)
        marker = {**asdict(producer), "token": self.token, "started": _now(),
                  "proc_start": _process_start(producer.pid) if producer.pid == os.getpid() else None}
        with self.fs.open(self.path(ATTEMPT_MARKER), "wb") as fh:
            fh.write(json.dumps(marker, sort_keys=True).encode())

    # where to write
    def path(self, name: str) -> str:
        """Full fsspec path of a file in this attempt's staging folder."""
        return self.lake.abspath(f"{self.rel}/{self.staging_rel}/{name}".rstrip("/"))

    @property
    def fs(self) -> Any:
        return self.lake.fs

    @contextlib.contextmanager
    def open(self, name: str, mode: str = "wb", *, rows: int | None = None) -> Iterator[IO[Any]]:
        full = self.path(name)
        self.fs.makedirs(full.rsplit("/", 1)[0], exist_ok=True)
        with self.fs.open(full, mode) as fh:
            yield fh
        self.add(name, rows=rows)

    def add(self, name: str, *, rows: int | None = None) -> None:
        """Record a file written (by any writer) at ``self.path(name)`` as part of the output."""
        self._rows[name] = rows

    def set_rows(self, name: str, rows: int) -> None:
        self._rows[name] = rows

    def quarantine(self, reason: str, records: list[dict[str, Any]]) -> None:
        """Keep bad records (as JSON lines) with a count per reason; nothing is dropped silently."""
        if not records:
            return
        safe = re.sub(r"[^a-z0-9_]+", "_", reason.lower())
        name = f"{QUARANTINE_DIR}/{safe}.jsonl"
        full = self.path(name)
        self.fs.makedirs(full.rsplit("/", 1)[0], exist_ok=True)
        mode = "ab" if self.fs.exists(full) and self.lake.is_local else "wb"
        if mode == "wb" and self.fs.exists(full):  # object stores cannot append: rewrite
            with self.fs.open(full, "rb") as fh:
                previous = fh.read()
        else:
            previous = b""
        with self.fs.open(full, mode) as fh:
            if previous:
                fh.write(previous)
            for rec in records:
                fh.write((json.dumps(rec, default=str, sort_keys=True) + "\n").encode())
        self.quarantine_counts[safe] = self.quarantine_counts.get(safe, 0) + len(records)
        self._rows.setdefault(name, None)
        self._rows[name] = self.quarantine_counts[safe]

    def commit(self, meta: dict[str, Any] | None = None) -> Manifest:
        """Create the manifest create-only. Raises AlreadyCommitted (and discards staging) if we lost."""
        entries = []
        for name, rows in sorted(self._rows.items()):
            full = self.path(name)
            try:
                size = self.fs.size(full)
            except FileNotFoundError:
                raise IntegrityError(f"{full}: recorded as output but not written") from None
            entries.append(FileEntry(path=f"{self.staging_rel}/{name}", size=size,
                                     sha256=_sha256(self.fs, full), rows=rows))
        data_rows = sum(r or 0 for n, r in self._rows.items() if not n.startswith(QUARANTINE_DIR + "/"))
        manifest = Manifest(
            dataset=self.dataset, path=self.rel, revision=self.base_revision, committed_at=_now(),
            producer=asdict(self.producer), files=entries, rows=data_rows, meta=meta or {},
            quarantine=dict(self.quarantine_counts), commit_id=f"{self.token}.{uuid.uuid4().hex}",
        )
        target = self.lake.abspath(f"{self.rel}/{MANIFEST_DIR}/{self.base_revision:06d}.json")
        try:
            created = self.lake.create_only(target, manifest.to_json().encode())
        except Exception as exc:  # noqa: BLE001 - any failure may hide a request that landed: ask the store
            # The request may have landed although it failed here (a timeout after the store wrote it):
            # only the store can tell. If the manifest there is ours, we committed.
            created = self._settle(manifest, exc)
        else:
            if not created:
                # "Already exists" can be our own earlier request answered late: a retried conditional
                # create whose first response was lost. Keep the commit if the manifest there is ours.
                created = self._settle(manifest, None)
        if not created:
            winner = self.lake.manifest(self.rel)
            self.discard()
            raise AlreadyCommitted(self.lake.abspath(self.rel), winner)
        self.committed_manifest = manifest
        return manifest

    def _settle(self, manifest: Manifest, error: BaseException | None) -> bool:
        """Whether the manifest at our revision is the one we tried to create.

        False: another attempt's manifest is there (we lost). Raises (keeping our staging, which the
        collector reclaims later if it is not referenced) when the store cannot tell us.
        """
        try:
            there = self.lake.read_manifest(self.rel, manifest.revision)
        except Exception as exc:
            self._uncertain = True
            raise StorageError(f"{self.lake.abspath(self.rel)}: commit outcome unknown "
                               f"({error or 'exists'}; reading it back failed: {exc})") from exc
        if there is None:
            if error is None:  # "exists" but nothing there: a store we cannot trust for create-only
                self._uncertain = True
                raise StorageError(f"{self.lake.abspath(self.rel)}: create-only commit refused but no "
                                   f"manifest revision {manifest.revision} exists")
            self._uncertain = True  # a request still in flight could land later: keep the staging
            raise StorageError(f"{self.lake.abspath(self.rel)}: commit failed: {error}") from error
        return bool(manifest.commit_id) and there.commit_id == manifest.commit_id

    def discard(self) -> None:
        """Remove this attempt's staging folder (only ours; never a committed file).

        Not after an uncertain commit: a manifest we cannot see may point at it (the collector of
        abandoned attempts removes it later if no manifest does).
        """
        if self.committed_manifest is not None or self._uncertain:
            return
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.path(""), recursive=True)

    def __enter__(self) -> Stage:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None or self.committed_manifest is None:
            self.discard()


def require_config_dataset(config: Config, name: str) -> None:
    if name not in config.datasets:
        raise ConfigError(f"datasets.{name}: not declared in config")


def _synced_temp(full: str, data: bytes) -> str:
    """A uniquely named temporary file beside ``full`` holding ``data``, flushed and fsynced (its path): the
    local file system's way to make a name appear only with complete content (``os.link`` or ``os.replace``)."""
    tmp = f"{full}.tmp.{uuid.uuid4().hex}"
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return tmp
