"""``skyrec fetch-data``: a public data set fetched over HTTP from a pinned package file, checked, written whole;
and the atomic-layout mapping it ships with, on a file in that layout.

The package is a zip the test builds, served by a real HTTP server on localhost; the data set's pins are the
test's own (the real MovieLens package is fetched by ``benchmarks/bench_public.py``, not by tests)."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from importer_files import FILMS, ROOT

from skyrec.data import public

INTER = ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
         "1\t10\t5\t881250949\n1\t11\t4\t881250950\n2\t10\t3\t881250951\n2\t12\t4\t881250952\n"
         "3\t13\t5\t881250953\n3\t10\t4\t881250954\n")
ITEM = ("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "10\tToy Story\t1995\tAnimation Children's Comedy\n"
        "11\tGoldenEye\t1995\tAction Adventure Thriller\n"
        "12\tFour Rooms\t1995\tThriller\n"
        "13\tunkonwn\tunkonwn\tunknown\n")


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _wheel(inter: bytes = INTER.encode(), item: bytes = ITEM.encode()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("pkg/data/x.inter", inter)
        z.writestr("pkg/data/x.item", item)
        z.writestr("pkg/__init__.py", "")
    return buf.getvalue()


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[dict[str, bytes]]:
    """A real HTTP server on localhost serving ``files[name]`` at ``/name``; counts the requests."""
    files: dict[str, bytes] = {}
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            body = files.get(self.path.lstrip("/"))
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    files["_port"] = str(server.server_address[1]).encode()
    files["_hits"] = hits  # type: ignore[assignment]
    try:
        yield files
    finally:
        server.shutdown()
        server.server_close()


def _register(monkeypatch: pytest.MonkeyPatch, served: dict, wheel: bytes, *, pinned: bytes | None = None,
              inter_sha: str | None = None) -> public.PublicDataset:
    served["pkg.whl"] = wheel
    base = public.DATASETS["movielens-100k"]
    ds = dataclasses.replace(
        base, name="test-set", url=f"http://127.0.0.1:{served['_port'].decode()}/pkg.whl",
        sha256=_sha(pinned if pinned is not None else wheel), size=len(wheel),
        members=(public.Member("pkg/data/x.inter", "x.inter", inter_sha or _sha(INTER.encode()), "interactions"),
                 public.Member("pkg/data/x.item", "x.item", _sha(ITEM.encode()), "items")))
    monkeypatch.setitem(public.DATASETS, "test-set", ds)
    return ds


def test_fetch_writes_checked_files_and_reuses_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    served: dict) -> None:
    _register(monkeypatch, served, _wheel())
    got = public.fetch("test-set", tmp_path / "out")
    assert not got["reused"]
    assert Path(got["files"]["interactions"]).read_text() == INTER
    assert Path(got["files"]["items"]).read_text() == ITEM
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x.inter", "x.item"]  # no temporaries left
    assert served["_hits"] == ["/pkg.whl"]
    again = public.fetch("test-set", tmp_path / "out")
    assert again["reused"] and served["_hits"] == ["/pkg.whl"]  # intact files: no download
    # a damaged file is noticed and fetched again
    Path(got["files"]["items"]).write_text("damaged")
    assert not public.fetch("test-set", tmp_path / "out")["reused"]
    assert Path(got["files"]["items"]).read_text() == ITEM and len(served["_hits"]) == 2


def test_a_package_that_is_not_the_pinned_one_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             served: dict) -> None:
    _register(monkeypatch, served, _wheel(), pinned=b"another package")
    with pytest.raises(public.PublicDataError, match="is not the pinned .*nothing was written"):
        public.fetch("test-set", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_a_member_that_is_not_the_pinned_one_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        served: dict) -> None:
    _register(monkeypatch, served, _wheel(), inter_sha="0" * 64)
    with pytest.raises(public.PublicDataError, match="pkg/data/x.inter: SHA-256 .* is not the pinned 0000"):
        public.fetch("test-set", tmp_path / "out")
    assert not (tmp_path / "out" / "x.inter").exists()
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")] == []


def test_unreachable_and_offline_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, served: dict) -> None:
    ds = _register(monkeypatch, served, _wheel())
    monkeypatch.setitem(public.DATASETS, "test-set", dataclasses.replace(ds, url=ds.url.replace("pkg.whl", "gone")))
    with pytest.raises(public.PublicDataError, match=r"cannot download .*/gone: .*404.*--package FILE"):
        public.fetch("test-set", tmp_path / "out")
    copy = tmp_path / "pkg.whl"
    copy.write_bytes(_wheel())
    got = public.fetch("test-set", tmp_path / "out", package=copy)
    assert Path(got["files"]["interactions"]).read_text() == INTER
    with pytest.raises(public.PublicDataError, match="unknown data set 'nope'"):
        public.fetch("nope", tmp_path / "out")


def test_bad_output_folder_missing_package_and_a_failed_write_are_errors(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch,
                                                                         served: dict) -> None:
    _register(monkeypatch, served, _wheel())
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    with pytest.raises(public.PublicDataError, match="cannot use .*a-file as the output folder"):
        public.fetch("test-set", a_file)
    with pytest.raises(public.PublicDataError, match="--package .*nope.whl: no such file"):
        public.fetch("test-set", tmp_path / "out", package=tmp_path / "nope.whl")
    real_open = open

    class FullDisk:  # the file is created, then its first write fails
        def __init__(self, fh) -> None:
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.fh.close()

        def write(self, block: bytes) -> int:
            raise OSError(28, "No space left on device")

    def full_disk(path, mode="r", *args, **kwargs):  # the second member's write fails
        fh = real_open(path, mode, *args, **kwargs)
        return FullDisk(fh) if "w" in mode and ".x.item.tmp-" in str(path) else fh

    monkeypatch.setattr("builtins.open", full_disk)
    with pytest.raises(public.PublicDataError, match="No space left on device; nothing was left half-written"):
        public.fetch("test-set", tmp_path / "out")
    monkeypatch.setattr("builtins.open", real_open)
    assert not [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".") or "skyrec-fetch" in p.name]


def test_cli_prints_the_next_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, served: dict) -> None:
    from typer.testing import CliRunner

    from skyrec.cli import app

    _register(monkeypatch, served, _wheel())
    result = CliRunner().invoke(app, ["fetch-data", "test-set", "--out", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert "written" in result.output and "--mapping" in result.output and "config/examples/films" in result.output
    bad = CliRunner().invoke(app, ["fetch-data", "nope", "--out", str(tmp_path / "d")])
    assert bad.exit_code == 2 and "unknown data set 'nope'" in bad.output


def test_the_shipped_atomic_mapping_imports_that_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The films configuration + ``mappings/atomic.yaml``, as ``skyrec fetch-data`` prints: every row counted."""
    import json

    from typer.testing import CliRunner

    from skyrec.cli import app

    (tmp_path / "x.inter").write_text(INTER)
    (tmp_path / "x.item").write_text(ITEM)
    monkeypatch.setenv("SKYREC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SKYREC_PROJECT_ROOT", str(ROOT))
    monkeypatch.setenv("SKYREC_CONFIG_DIR", str(FILMS))
    mapping = ROOT / public.DATASETS["movielens-100k"].mapping
    result = CliRunner().invoke(app, ["import", "--items", str(tmp_path / "x.item"), "--interactions",
                                      str(tmp_path / "x.inter"), "--mapping", str(mapping)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("\n{\n") + 1:])
    items, inter = summary["files"]
    assert (items["rows_in"], items["imported"], items["quarantined"]) == (4, 3, {"bad_date": 1})
    assert (inter["rows_in"], inter["imported"], inter["filtered"]) == (6, 5, {"below_threshold": 1})
    episodes = {json.loads(p.read_text())["id"]: json.loads(p.read_text())
                for p in (tmp_path / "home" / "source" / "metadata" / "episodes").rglob("*.json")}
    assert episodes["10"]["genres"] == ["Animation", "Children's", "Comedy"]
    assert episodes["10"]["title"] == "Toy Story" and episodes["10"]["release_date"].startswith("1995-01-01")
