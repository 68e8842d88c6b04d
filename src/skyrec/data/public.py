"""Public data sets to try skyrec on real data: ``skyrec fetch-data movielens-100k``.

These machines reach only the package registries, so a data set is fetched from a package on the Python
package index that redistributes it, pinned by the package file's URL and SHA-256, and each extracted file
is checked against its own SHA-256. Nothing is installed: the package file is read as a zip archive and
only the data files are written, each whole (temporary name, then rename). A re-run with the files already
in place and intact downloads nothing.

Each data set comes with an import mapping (``config/examples/.../mappings``) for ``skyrec import``; the
files keep the layout they are published in.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyrec.data.importer import file_sha256


class PublicDataError(RuntimeError):
    """A data set could not be fetched or did not match its pinned digests; the message says what to do."""


@dataclass(frozen=True)
class Member:
    """One file of a data set: its path inside the package, the name it is written under, its SHA-256."""

    archive_path: str
    name: str
    sha256: str
    role: str  # interactions | items


@dataclass(frozen=True)
class PublicDataset:
    name: str
    description: str
    citation: str
    licence: str
    package: str
    url: str
    sha256: str
    size: int
    members: tuple[Member, ...]
    config_dir: str  # relative to the project root
    mapping: str  # relative to the project root
    end: str  # the activity's end as `skyrec import` prints it (the logical date of the DAG runs)
    notes: tuple[str, ...] = field(default=())


DATASETS: dict[str, PublicDataset] = {
    "movielens-100k": PublicDataset(
        name="movielens-100k",
        description="MovieLens 100K: 100,000 ratings (1-5) by 943 users of 1,682 films, 1997-09-20 to "
                    "1998-04-23, with the films' titles, release years and genres",
        citation="F. Maxwell Harper and Joseph A. Konstan. 2015. The MovieLens Datasets: History and Context. "
                 "ACM TiiS 5(4). GroupLens Research, https://grouplens.org/datasets/movielens/100k/",
        licence="GroupLens' MovieLens licence: research use, no redistribution, cite the paper; read "
                "https://files.grouplens.org/datasets/movielens/ml-100k-README.txt before using it",
        package="recbole 1.2.1 (its wheel ships the data set in RecBole's atomic-file layout)",
        url="https://files.pythonhosted.org/packages/ab/fe/7d606cb7cd2b166a36b100cb9435d21014ceee16c192d972deb0976967a8/"
            "recbole-1.2.1-py3-none-any.whl",
        sha256="9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
        size=2_130_151,
        members=(
            Member("recbole/dataset_example/ml-100k/ml-100k.inter", "ml-100k.inter",
                   "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff", "interactions"),
            Member("recbole/dataset_example/ml-100k/ml-100k.item", "ml-100k.item",
                   "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532", "items"),
        ),
        config_dir="config/examples/films",
        mapping="config/examples/films/mappings/atomic.yaml",
        end="1998-04-23T00:00:00Z",
        notes=("two films carry no usable release year ('unkonwn', 'V') and are quarantined as bad_date, "
               "their 5 ratings as unknown_item at ingest: counted, not lost",),
    ),
}


def _intact(dest: Path, ds: PublicDataset) -> bool:
    return all((dest / m.name).is_file() and file_sha256(dest / m.name) == m.sha256 for m in ds.members)


def _download(ds: PublicDataset, into: Path, progress: Callable[[str], None], timeout: float) -> Path:
    target = into / ds.url.rsplit("/", 1)[-1]
    progress(f"downloading {ds.package} ({ds.size / 1e6:.1f} MB) from {ds.url}")
    try:
        with urllib.request.urlopen(ds.url, timeout=timeout) as resp, open(target, "wb") as out:
            for block in iter(lambda: resp.read(1 << 16), b""):
                out.write(block)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise PublicDataError(f"cannot download {ds.url}: {exc}. On a machine without access to it, download "
                              f"that file elsewhere and pass it with --package FILE") from exc
    return target


def _extract(ds: PublicDataset, package: Path, dest: Path) -> None:
    got = file_sha256(package)
    if got != ds.sha256:
        raise PublicDataError(f"{package.name}: SHA-256 {got} is not the pinned {ds.sha256} of {ds.url}; "
                              "nothing was written")
    try:
        archive = zipfile.ZipFile(package)
    except zipfile.BadZipFile as exc:  # only reachable with a digest collision; kept for a clear error
        raise PublicDataError(f"{package}: not a zip archive ({exc})") from exc
    with archive:
        for m in ds.members:
            tmp = dest / f".{m.name}.tmp-{os.getpid()}"
            h = hashlib.sha256()
            try:  # written whole under a temporary name, renamed only when its digest is the pinned one
                try:
                    with archive.open(m.archive_path) as src, open(tmp, "wb") as out:
                        for block in iter(lambda: src.read(1 << 16), b""):
                            h.update(block)
                            out.write(block)
                except KeyError as exc:
                    raise PublicDataError(f"{package}: has no {m.archive_path}") from exc
                if h.hexdigest() != m.sha256:
                    raise PublicDataError(f"{m.archive_path}: SHA-256 {h.hexdigest()} is not the pinned {m.sha256}")
                os.replace(tmp, dest / m.name)
            finally:  # a wrong member, a full disk, an interrupt: no temporary file is left behind
                tmp.unlink(missing_ok=True)


def fetch(name: str, dest: str | os.PathLike[str], *, package: str | os.PathLike[str] | None = None,
          progress: Callable[[str], None] = lambda _msg: None, timeout: float = 60.0) -> dict[str, Any]:
    """Write data set ``name``'s files into ``dest`` (created); ``package``: a copy of the pinned package file
    already on this machine (no download). Returns ``{"files": {role: path}, "mapping", "config_dir", "end",
    "reused"}``; paths are absolute."""
    if name not in DATASETS:
        raise PublicDataError(f"unknown data set {name!r} (known: {', '.join(sorted(DATASETS))})")
    ds = DATASETS[name]
    out = Path(dest).resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PublicDataError(f"cannot use {dest} as the output folder: {exc}") from exc
    if package is not None and not Path(package).is_file():
        raise PublicDataError(f"--package {package}: no such file (the pinned package is {ds.url})")
    try:
        reused = _intact(out, ds)
        if not reused:
            if package is not None:
                _extract(ds, Path(package), out)
            else:
                with tempfile.TemporaryDirectory(prefix="skyrec-fetch-", dir=out) as tmp:
                    _extract(ds, _download(ds, Path(tmp), progress, timeout), out)
    except OSError as exc:  # reading the package, writing the files (a full disk, no permission)
        raise PublicDataError(f"{ds.name}: {exc}; nothing was left half-written") from exc
    from skyrec.config import project_root

    root = project_root()
    return {"name": ds.name, "files": {m.role: str(out / m.name) for m in ds.members},
            "mapping": str(root / ds.mapping), "config_dir": str(root / ds.config_dir), "end": ds.end,
            "reused": reused, "description": ds.description, "citation": ds.citation, "licence": ds.licence,
            "notes": list(ds.notes)}
