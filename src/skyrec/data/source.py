"""The raw-data source: a local folder or an S3-compatible bucket (``source.kind``).

Metadata is listed and fetched object by object (``MetadataSource``: boto3 for S3, so the sync controls
concurrency, ETags and retries itself); activity Parquet is read through fsspec (``source_fs``).

Credentials for S3 come from the standard environment variables ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY`` and (STS) ``AWS_SESSION_TOKEN`` -- the Airflow layer fills them from the
connection named by ``source.aws_conn_id``; nothing here reads Airflow.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from skyrec.config import Config, ConfigError


@dataclass(frozen=True)
class SourceObject:
    key: str  # relative to the source root, '/'-separated
    etag: str
    size: int


def _split_s3(url: str) -> tuple[str, str]:
    if not url.startswith("s3://"):
        raise ConfigError(f"source.url: {url!r} must be s3://bucket[/prefix] when source.kind is s3")
    bucket, _, prefix = url[5:].partition("/")
    if not bucket:
        raise ConfigError(f"source.url: {url!r} has no bucket")
    return bucket, prefix.strip("/")


def is_s3(config: Config) -> bool:
    return config.source.kind == "s3"


def s3_storage_options(config: Config) -> dict[str, Any]:
    """fsspec/s3fs options for the source (endpoint from config, credentials from the environment)."""
    opts: dict[str, Any] = {}
    if config.source.endpoint_url:
        opts["client_kwargs"] = {"endpoint_url": config.source.endpoint_url}
    return opts


def source_fs(config: Config) -> tuple[Any, str]:
    """(fsspec filesystem, root path) of the source, for reading/writing files such as activity Parquet."""
    import fsspec

    if is_s3(config):
        bucket, prefix = _split_s3(config.source_url)
        fs = fsspec.filesystem("s3", **s3_storage_options(config))
        return fs, f"{bucket}/{prefix}".rstrip("/")
    root = config.source_url
    fs = fsspec.filesystem("file")
    return fs, os.path.abspath(root)


class LocalSource:
    """A local folder. The ETag is size+mtime (like rsync): cheap, and changes when the object is rewritten."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def list(self, prefix: str) -> Iterator[SourceObject]:
        base = os.path.join(self.root, prefix)
        if not os.path.isdir(base):
            return
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                st = os.stat(full)
                key = os.path.relpath(full, self.root).replace(os.sep, "/")
                yield SourceObject(key, f"{st.st_size:x}-{st.st_mtime_ns:x}", st.st_size)

    def get(self, key: str) -> bytes:
        with open(os.path.join(self.root, key), "rb") as fh:
            return fh.read()


class S3Source:
    """An S3-compatible bucket through boto3 (``endpoint_url`` for non-AWS endpoints such as moto/MinIO)."""

    def __init__(self, url: str, *, endpoint_url: str | None = None, max_connections: int = 16) -> None:
        import boto3
        from botocore.config import Config as BotoConfig

        self.bucket, self.prefix = _split_s3(url)
        session = boto3.session.Session()  # env credentials incl. AWS_SESSION_TOKEN (STS)
        self.client = session.client(
            "s3", endpoint_url=endpoint_url,
            config=BotoConfig(max_pool_connections=max(10, max_connections),
                              retries={"max_attempts": 5, "mode": "standard"}),
        )

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def list(self, prefix: str) -> Iterator[SourceObject]:
        full_prefix = self._full(prefix.strip("/")) + "/"
        cut = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
            for obj in page.get("Contents", []):
                yield SourceObject(obj["Key"][cut:], obj["ETag"].strip('"'), int(obj["Size"]))

    def get(self, key: str) -> bytes:
        resp = self.client.get_object(Bucket=self.bucket, Key=self._full(key))
        return resp["Body"].read()


def open_metadata_source(config: Config, *, max_connections: int = 16) -> LocalSource | S3Source:
    if is_s3(config):
        return S3Source(config.source_url, endpoint_url=config.source.endpoint_url, max_connections=max_connections)
    return LocalSource(config.source_url)


# ---- replayed inputs -----------------------------------------------------------------------------
# Quarantined records, once fixed, come back as an extra input of the output they were quarantined from:
# ``<lake>/_replay/<output path>/<token>/`` is itself a committed output (files + manifest, create-only), so a
# job reads only complete replay inputs, and every later (forced) build of that output includes them.
REPLAY_DIR = "_replay"


def replay_prefix(output_rel: str) -> str:
    return f"{REPLAY_DIR}/{output_rel.strip('/')}/"


def replay_inputs(lake: Any, output_rel: str) -> list[Any]:
    """Committed replay inputs of the output at ``output_rel`` (Manifests, oldest first)."""
    out = []
    for rel in lake.versions(replay_prefix(output_rel)):
        m = lake.manifest(rel)
        if m is not None:
            out.append(m)
    return out


def add_replay_input(lake: Any, output_rel: str, producer: Any, files: dict[str, bytes],
                     meta: dict[str, Any]) -> Any:
    """Commit ``files`` (name -> bytes) as a new replay input of ``output_rel``; returns its Manifest."""
    import datetime as dt
    import uuid

    token = f"r{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}"
    stage = lake.stage("replay", f"{replay_prefix(output_rel)}{token}", producer)
    with stage:
        for name, data in files.items():
            with stage.open(name, "wb", rows=meta.get("rows")) as fh:
                fh.write(data)
        return stage.commit(meta)
