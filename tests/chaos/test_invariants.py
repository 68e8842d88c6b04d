"""The chaos checks themselves: each must flag the damage it exists to find (no servers needed)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from skyrec.chaos.harness import KINDS, fault_kinds, plan_faults
from skyrec.chaos.invariants import Publication, api_violations, check_answer, check_outputs
from skyrec.publish.resp import encode_command, parse_commands
from skyrec.storage import Lake, Producer


def _commit(lake: Lake, rel: str, body: bytes, *, force: bool = False, task: str = "t") -> None:
    stage = lake.stage("demo", rel, Producer("d", "r", task, 1, "k"), force=force)
    with stage.open("data.bin", rows=1) as fh:
        fh.write(body)
    stage.commit()


def test_outputs_pass_when_committed_once(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    _commit(lake, "demo/run=1", b"abc")
    assert check_outputs(lake, {"demo": "demo/run=1"}, complete=True) == []


def test_second_revision_missing_file_and_missing_output_are_violations(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    _commit(lake, "demo/run=1", b"abc")
    _commit(lake, "demo/run=1", b"abcd", force=True)  # a retry that committed twice
    _commit(lake, "demo/run=2", b"xyz")
    m = lake.require("demo/run=2")
    Path(lake.file_url(m, "data.bin")).unlink()  # a committed manifest whose file is gone
    found = check_outputs(lake, {"a": "demo/run=1", "b": "demo/run=2", "c": "demo/run=3"}, complete=True)
    kinds = sorted((v.invariant, v.path) for v in found)
    assert kinds == [("one_manifest", "demo/run=1"), ("one_manifest", "demo/run=3"), ("verify", "demo/run=2")]
    assert check_outputs(lake, {"c": "demo/run=3"}, complete=False) == []  # a failed run may commit nothing


def test_parse_resp_reads_the_publisher_encoding() -> None:
    data = encode_command("SET", "k", '[["a", 1.5]]') + encode_command("HSET", "h", "a", '{"title": "A"}')
    assert parse_commands(data) == [[b"SET", b"k", b'[["a", 1.5]]'], [b"HSET", b"h", b"a", b'{"title": "A"}']]


def _pub(pub: str, recs: list[tuple[str, float]], title: str) -> Publication:
    items = {i: {"title": f"{title} {i}", "brand": "B", "genres": ["Comedy"]} for i in ("a", "b", "c", "d")}
    return Publication("rail", pub, f"mv-{pub}", f"predictions/{pub}", {"u1": recs}, [("d", 0.1)], items)


def _answer(pub: Publication, items: list[tuple[str, float]], *, padded: int = 0,
            title_from: Publication | None = None, source: str = "personalised") -> dict:
    meta = (title_from or pub).items
    return {"user_id": "u1", "variant": "rail", "publication": pub.publication, "model_version": pub.model_version,
            "source": source, "offset": 0, "padded": padded,
            "items": [{"id": i, "score": s, **meta[i]} for i, s in items]}


def test_answers_of_one_publication_pass_and_mixes_are_caught() -> None:
    p1 = _pub("v1.r1", [("a", 0.9), ("b", 0.8), ("c", 0.7)], "Old")
    p2 = _pub("v1.r2", [("c", 0.95), ("a", 0.5)], "New")
    pubs = {("rail", p.publication): p for p in (p1, p2)}
    assert check_answer(_answer(p1, [("a", 0.9), ("c", 0.7), ("d", 0.1)], padded=1), pubs) is None
    assert check_answer(_answer(p2, [("d", 0.1)], source="fallback"), pubs) is None
    mixes = [
        _answer(p2, [("a", 0.9), ("b", 0.8)]),                      # p1's list under p2's id
        _answer(p1, [("a", 0.9)], title_from=p2),                    # p2's titles on p1's list
        {**_answer(p1, [("a", 0.9)]), "model_version": "mv-v1.r2"},  # another publication's model version
        {**_answer(p1, [("a", 0.9)]), "publication": "v1.r9"},       # a publication never committed
        _answer(p1, [("b", 0.8), ("a", 0.9)]),                       # out of the publication's order
    ]
    for body in mixes:
        assert check_answer(body, pubs) is not None, body
    # the per-item shape: padding marked with its origin and unscored
    marked = _answer(p1, [("a", 0.9), ("d", 0.1)], padded=1)
    marked["items"][0]["origin"], marked["items"][1]["origin"], marked["items"][1]["score"] = \
        "personalised", "fallback", None
    assert check_answer(marked, pubs) is None
    marked["items"][0]["id"], marked["items"][0]["title"] = "c", "Old c"
    marked["items"][0]["score"] = 0.95  # p2's score for c under p1's id
    assert check_answer(marked, pubs) is not None
    bad = api_violations([{"url": "/x", "status": 500, "text": "boom"}, {"url": "/y", "status": 503, "text": ""},
                          {"url": "/z", "status": 200, "body": mixes[0]}], pubs)
    assert [v.detail.split(":")[0] for v in bad] == ["HTTP 500 for /x", "/z"]


def test_fault_plan_is_seeded_and_covers_every_kind() -> None:
    runs = [fault_kinds(7, r, 5, list(KINDS)) for r in range(3)]
    assert runs == [fault_kinds(7, r, 5, list(KINDS)) for r in range(3)]
    flat = [k for ks in runs for k in ks]
    assert set(flat) == set(KINDS) and max(flat.count(k) for k in KINDS) - min(flat.count(k) for k in KINDS) <= 1
    faults = plan_faults(random.Random("7:0"), 8, runs[0])
    tasks = [f.task for f in faults if f.kind != "redis_restart"]
    assert len(tasks) == len(set(tasks))  # at most one fault per task attempt (a Redis restart may share one)
    assert json.dumps([f.kind for f in faults]) == json.dumps(runs[0])


@pytest.mark.parametrize("bad", ["kill_everything"])
def test_cli_rejects_unknown_kinds(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    from skyrec.chaos.__main__ import main

    with pytest.raises(SystemExit) as exc:
        main(["--kinds", bad])
    assert exc.value.code == 2
    assert bad in capsys.readouterr().err


def test_a_process_left_running_in_the_world_is_an_orphan(tmp_path: Path) -> None:
    """``no_orphans``: a process naming the world's home that is not one of the world's servers is reported;
    the world's own (and their children) are not."""
    import subprocess
    import sys

    from skyrec.chaos.invariants import orphan_processes

    home = tmp_path / "home"
    home.mkdir()
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)", str(home / "state" / "scratch")]
    stray = subprocess.Popen(sleeper)
    server = subprocess.Popen(sleeper)
    try:
        found = orphan_processes(home, own={server.pid})
        assert [v.invariant for v in found] == ["no_orphans"] and f"pid {stray.pid} " in found[0].detail
        assert orphan_processes(home, own={server.pid, stray.pid}) == []
    finally:
        for p in (stray, server):
            p.kill()
            p.wait()
    assert orphan_processes(home, own=set()) == []  # ended (reaped) processes are not orphans


@pytest.mark.integration
def test_redis_leftovers_are_what_no_collection_can_find(redis_client) -> None:
    """``redis_leftovers``: a load nobody finished is collected before the check (not a violation); keys of a
    publication that is neither served nor registered, and plays with no owner, are."""
    import time

    from skyrec.chaos.invariants import redis_leftovers
    from skyrec.publish import histories, removal
    from skyrec.publish.keys import Keys

    k = Keys("skyrec")
    ns = Keys.shared_hist_namespace("abc", 5)
    for pub, served in (("p1", True), ("p0", False)):  # p0: a load killed after its registration
        removal.register(redis_client, k, "drama", pub)
        histories.attach(redis_client, k, ns, "drama", pub)
        redis_client.set(k.rec("drama", pub, "u1"), "[]")
        redis_client.set(k.hist(ns, "u1"), "[]")
        if served:
            redis_client.set(k.current("drama"), '{"publication": "p1"}')
    redis_client.zadd(k.publications("drama"), {"p0": time.time() - 60})
    assert redis_leftovers(redis_client, "skyrec") == []
    assert not redis_client.exists(k.rec("drama", "p0", "u1")) and redis_client.exists(k.rec("drama", "p1", "u1"))
    redis_client.set(k.rec("drama", "lost", "u1"), "[]")  # keys of a publication nobody registered
    redis_client.set(k.hist("@orphan.n5", "u1"), "[]")  # plays nobody owns
    ghost = Keys.shared_hist_namespace("def", 5)  # plays whose only owner is a publication nobody serves
    redis_client.sadd(k.hist_refs(ghost), "drama/ghost")
    redis_client.set(k.hist(ghost, "u1"), "[]")
    found = sorted(v.detail for v in redis_leftovers(redis_client, "skyrec"))
    assert any(ghost in v and "drama/ghost" in v for v in found), found
    assert [v.split(" ")[0:4] for v in found] == [["1", "key(s)", "of", "drama/lost,"],
                                                 ["1", "key(s)", "of", "plays"],
                                                 ["history", "namespace", "@orphan.n5", "has"]], found
