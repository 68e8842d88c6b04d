"""The commit protocol on an object store over HTTP (moto's S3 server), with faults injected between the
client and the server by a real proxy: a lost response to the create-only manifest PUT, a long-lived
reader, and collection of abandoned attempts."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from skyrec.chaos.proxy import FaultProxy, Rule
from skyrec.storage import AlreadyCommitted, Lake, Producer

pytestmark = pytest.mark.integration


def _lose_manifest_put_response(proxy: FaultProxy) -> Rule:
    """The create-only PUT of revision 0 lands, then its response is lost: the client library retries it."""
    return proxy.arm(Rule("lost_response", methods=frozenset({"PUT"}), path_contains="/_manifest/000000.json"))


def _lake(endpoint: str, *, fresh_instance: bool = True) -> Lake:
    # skip_instance_cache: each Lake here stands for its own process (fsspec shares instances per process)
    opts: dict[str, Any] = {"client_kwargs": {"endpoint_url": endpoint}, "skip_instance_cache": fresh_instance}
    return Lake("s3://lake/root", opts)


def _stage(lake: Lake, rel: str, payload: bytes, task: str = "t", force: bool = False):
    st = lake.stage("d", rel, Producer(task_id=task), force=force)
    with st.open("part-0.bin", rows=len(payload)) as fh:
        fh.write(payload)
    return st


def test_lost_response_to_manifest_put_keeps_own_commit(s3: Any) -> None:
    endpoint, proxy = s3
    lake = _lake(proxy.url)
    st = _stage(lake, "d/run=1", b"payload")
    rule = _lose_manifest_put_response(proxy)
    m = st.commit({"k": 1})  # the first PUT lands, its answer is lost, the client's retry gets 412
    assert len(rule.fired) == 1
    got = _lake(endpoint).require("d/run=1")
    assert got.commit_id == m.commit_id
    _lake(endpoint).verify(got)  # every listed file still there: the staging was not discarded


def test_lost_response_then_real_loser_still_refused(s3: Any) -> None:
    endpoint, proxy = s3
    a = _stage(_lake(endpoint), "d/run=1", b"first", task="a")
    b = _stage(_lake(proxy.url), "d/run=1", b"second", task="b")
    a.commit()
    rule = _lose_manifest_put_response(proxy)  # b's request is refused, and its answer lost
    with pytest.raises(AlreadyCommitted):
        b.commit()
    assert len(rule.fired) == 1
    m = _lake(endpoint).require("d/run=1")
    with _lake(endpoint).open(m, "part-0.bin") as fh:
        assert fh.read() == b"first"
    _lake(endpoint).verify(m)


_WRITER = """
import sys
from skyrec.storage import Lake, Producer
lake = Lake("s3://lake/root", {"client_kwargs": {"endpoint_url": sys.argv[1]}})
st = lake.stage("d", "d/run=1", Producer(task_id="other"), force=True)
with st.open("part-0.bin", rows=2) as fh:
    fh.write(b"v2")
st.commit()
"""


def test_long_lived_reader_sees_revision_committed_by_another_process(s3: Any) -> None:
    endpoint, _ = s3
    reader = _lake(endpoint, fresh_instance=False)  # the process-wide instance, as a long-lived API has
    _stage(reader, "d/run=1", b"v1").commit()
    assert reader.require("d/run=1").revision == 0
    assert reader.versions("d/") == ["d/run=1"]
    subprocess.run([sys.executable, "-c", _WRITER, endpoint], check=True, timeout=120)
    m = reader.require("d/run=1")
    assert m.revision == 1 and m.rows == 2
    with reader.open(m, "part-0.bin") as fh:
        assert fh.read() == b"v2"


def test_collector_on_object_store_removes_dead_staging_keeps_committed_and_live(s3: Any) -> None:
    import time

    endpoint, _ = s3
    lake = _lake(endpoint)
    _stage(lake, "d/run=1", b"won", task="winner").commit()
    dead = lake.stage("d", "d/run=1", Producer(task_id="dead", host="gone-host"), force=True)
    with dead.open("part-0.bin", rows=1) as fh:
        fh.write(b"x")
    live = _stage(lake, "d/run=1", b"live", task="live", force=True)
    removed = lake.collect("d/run=1", grace_seconds=3600, now=time.time() + 7200)
    assert removed == [f"d/run=1/{dead.staging_rel}"]
    assert not lake.fs.exists(dead.path("part-0.bin"))
    assert lake.fs.exists(live.path("part-0.bin"))
    lake.verify(lake.require("d/run=1"))
