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
import datetime as dt
import hashlib
import json
import os
import re
import socket
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
_REVISION = re.compile(r"^(\d{6})\.json$")


class StorageError(RuntimeError):
    pass


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

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        raw = json.loads(text)
        raw["files"] = [FileEntry(**f) for f in raw["files"]]
        return cls(**raw)

    def file(self, name: str) -> FileEntry:
        for f in self.files:
            if f.path == name or f.path.rsplit("/", 1)[-1] == name:
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
    def _revisions(self, rel: str) -> list[int]:
        mdir = self.abspath(f"{rel}/{MANIFEST_DIR}")
        try:
            names = [p.rsplit("/", 1)[-1] for p in self.fs.ls(mdir, detail=False)]
        except FileNotFoundError:
            return []
        return sorted(int(m.group(1)) for n in names if (m := _REVISION.match(n)))

    def manifest(self, rel: str) -> Manifest | None:
        """The committed manifest of the output at ``rel`` (highest revision), or None."""
        revs = self._revisions(rel)
        if not revs:
            return None
        with self.fs.open(self.abspath(f"{rel}/{MANIFEST_DIR}/{revs[-1]:06d}.json"), "rb") as fh:
            return Manifest.from_json(fh.read().decode())

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
            entries = self.fs.ls(base, detail=True)
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
            tmp = f"{full}.tmp.{uuid.uuid4().hex}"
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
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
            tmp = f"{full}.tmp.{uuid.uuid4().hex}"
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, full)
        else:
            self.fs.pipe_file(full, data)  # single-object PUT is atomic on object stores

    def read_pointer(self, rel: str) -> dict[str, Any] | None:
        try:
            with self.fs.open(self.abspath(rel), "rb") as fh:
                return json.loads(fh.read())
        except FileNotFoundError:
            return None

    def gc_attempts(self, rel: str) -> list[str]:
        """Remove attempt folders the committed manifests do not reference (never a referenced file)."""
        keep: set[str] = set()
        for rev in self._revisions(rel):
            with self.fs.open(self.abspath(f"{rel}/{MANIFEST_DIR}/{rev:06d}.json"), "rb") as fh:
                m = Manifest.from_json(fh.read().decode())
            keep.update(f.path.split("/")[1] for f in m.files if f.path.startswith(ATTEMPTS_DIR + "/"))
        removed = []
        base = self.abspath(f"{rel}/{ATTEMPTS_DIR}")
        try:
            tokens = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(base, detail=False)]
        except FileNotFoundError:
            return []
        for token in tokens:
            if token not in keep and self._revisions(rel):
                self.fs.rm(f"{base}/{token}", recursive=True)
                removed.append(token)
        return removed


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
        self.lake.fs.makedirs(self.path(""), exist_ok=True)

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
            quarantine=dict(self.quarantine_counts),
        )
        target = self.lake.abspath(f"{self.rel}/{MANIFEST_DIR}/{self.base_revision:06d}.json")
        if not self.lake.create_only(target, manifest.to_json().encode()):
            winner = self.lake.manifest(self.rel)
            self.discard()
            raise AlreadyCommitted(self.lake.abspath(self.rel), winner)
        self.committed_manifest = manifest
        return manifest

    def discard(self) -> None:
        """Remove this attempt's staging folder (only ours; never a committed file)."""
        if self.committed_manifest is not None:
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
