from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from skyrec.storage import AlreadyCommitted, IntegrityError, Lake, Producer


def _write(lake: Lake, rel: str, payload: bytes, task: str = "t", force: bool = False):
    st = lake.stage("d", rel, Producer(task_id=task), force=force)
    with st.open("part-0.bin", rows=len(payload)) as fh:
        fh.write(payload)
    return st


def test_commit_then_readers_see_only_committed(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    st = _write(lake, "d/run=1", b"abc")
    assert lake.manifest("d/run=1") is None  # staged, not committed: invisible
    m = st.commit({"k": 1})
    got = lake.require("d/run=1")
    assert got.rows == 3 and got.meta == {"k": 1} and got.revision == 0
    lake.verify(got)
    with lake.open(got, "part-0.bin") as fh:
        assert fh.read() == b"abc"
    assert m.files[0].sha256 == got.files[0].sha256


def test_recommit_refused_without_force(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    _write(lake, "d/run=1", b"a").commit()
    with pytest.raises(AlreadyCommitted):
        lake.stage("d", "d/run=1", Producer())


def test_concurrent_attempts_first_commit_wins_and_loser_staging_discarded(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    a = _write(lake, "d/run=1", b"first", task="a")
    b = _write(lake, "d/run=1", b"second!", task="b")
    a.commit()
    with pytest.raises(AlreadyCommitted):
        b.commit()
    m = lake.require("d/run=1")
    with lake.open(m, "part-0.bin") as fh:
        assert fh.read() == b"first"
    assert not Path(b.path("")).exists()
    assert Path(a.path("part-0.bin")).exists()


def test_forced_rerun_commits_new_revision_without_deleting_old(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    first = _write(lake, "d/run=1", b"v1").commit()
    second = _write(lake, "d/run=1", b"v2v2", force=True).commit()
    assert second.revision == 1
    assert lake.require("d/run=1").rows == 4
    assert Path(lake.abspath(f"d/run=1/{first.files[0].path}")).exists()


def test_verify_detects_tampering(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    m = _write(lake, "d/run=1", b"abc").commit()
    Path(lake.abspath(f"d/run=1/{m.files[0].path}")).write_bytes(b"abd")
    with pytest.raises(IntegrityError, match="checksum"):
        lake.verify(m)
    Path(lake.abspath(f"d/run=1/{m.files[0].path}")).unlink()
    with pytest.raises(IntegrityError, match="missing"):
        lake.verify(m)


def test_quarantine_counts_in_manifest(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    st = _write(lake, "d/run=1", b"abc")
    st.quarantine("Malformed JSON", [{"raw": "{"}, {"raw": "x"}])
    st.quarantine("malformed json", [{"raw": "y"}])
    m = st.commit()
    assert m.quarantine == {"malformed_json": 3}
    assert m.rows == 3  # quarantine files do not count as data rows


def test_pointer_refuses_uncommitted_target(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    _write(lake, "d/run=1", b"a")  # staged only
    with pytest.raises(Exception, match="not committed"):
        lake.write_pointer("pointers/d.json", {"path": "d/run=1"})


def _race(root: str, i: int, q, barrier) -> None:
    lake = Lake(root)
    st = lake.stage("d", "d/run=race", Producer(task_id=f"p{i}"))  # everyone stages before anyone commits
    with st.open("part-0.bin", rows=1) as fh:
        fh.write(str(i).encode() * 1000)
    barrier.wait(30)  # then all commit at once
    try:
        st.commit()
        q.put(("won", st.path("")))
    except AlreadyCommitted:
        q.put(("lost", st.path("")))


def test_many_processes_racing_exactly_one_wins(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    barrier = ctx.Barrier(8)
    procs = [ctx.Process(target=_race, args=(str(tmp_path), i, q, barrier)) for i in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    results = [q.get(timeout=5) for _ in procs]
    outcomes = sorted(r for r, _ in results)
    assert outcomes == ["lost"] * 7 + ["won"]  # every process really raced to commit
    lake = Lake(str(tmp_path))
    m = lake.require("d/run=race")
    lake.verify(m)
    with lake.open(m, "part-0.bin") as fh:
        data = fh.read()
    assert len(set(data)) == 1 and len(data) == 1000  # one writer's complete output, never mixed
    for outcome, staging in results:  # losers' staging discarded, the winner's kept
        assert Path(staging).exists() == (outcome == "won")


# ---- collecting abandoned attempts ---------------------------------------------------------------
DAY = 86400.0


def _dead_pid() -> int:
    ctx = mp.get_context("fork")
    p = ctx.Process(target=lambda: None)
    p.start()
    p.join()
    return int(p.pid)


def test_collector_removes_only_dead_unreferenced_attempts_after_grace(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    committed = _write(lake, "d/run=1", b"won", task="winner")
    committed.commit()
    dead = lake.stage("d", "d/run=1", Producer(task_id="dead", pid=_dead_pid()), force=True)
    with dead.open("part-0.bin", rows=1) as fh:
        fh.write(b"x")
    live = _write(lake, "d/run=1", b"live", task="live", force=True)  # this process: alive
    later = __import__("time").time() + 2 * DAY

    # within the grace period nothing goes, dead or not
    assert lake.collect("d/run=1", grace_seconds=DAY) == []
    removed = lake.collect("d/run=1", grace_seconds=DAY, now=later)
    assert removed == [f"d/run=1/{dead.staging_rel}"]
    assert not Path(dead.path("")).exists()
    assert Path(live.path("part-0.bin")).exists()  # a live attempt's staging is never touched
    m = lake.require("d/run=1")
    lake.verify(m)  # the committed attempt's files are referenced: kept
    live.commit()  # and the live attempt can still commit
    lake.verify(lake.require("d/run=1"))


def test_collector_liveness_can_be_given_and_temp_manifests_go(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    st = _write(lake, "d/run=2", b"x", task="elsewhere")
    orphan = Path(lake.abspath("d/run=2/_manifest/000000.json.tmp.deadbeef"))
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"{")  # a commit killed between writing and linking its manifest
    later = __import__("time").time() + 2 * DAY
    kept = lake.collect("d/run=2", grace_seconds=DAY, now=later, is_live=lambda marker: True)
    assert kept == ["d/run=2/_manifest/000000.json.tmp.deadbeef"] and not orphan.exists()
    assert Path(st.path("part-0.bin")).exists()
    gone = lake.collect("d/run=2", grace_seconds=DAY, now=later, is_live=lambda marker: False, dry_run=True)
    assert gone == [f"d/run=2/{st.staging_rel}"] and Path(st.path("")).exists()  # dry run removes nothing
    assert lake.manifest("d/run=2") is None
