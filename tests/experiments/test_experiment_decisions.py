"""Decisions: stop, promote, revert recorded in the serving Redis (compare-and-set) and audited; the API applies
them without a Redis read per request; the CLI."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time

import pytest
import redis
from typer.testing import CliRunner

from skyrec.experiments import control
from skyrec.experiments.assign import Overrides
from skyrec.experiments.control import DecisionError, decide, overrides_of

pytestmark = pytest.mark.integration

NOW = dt.datetime.now(dt.UTC)
EXPERIMENT = {
    "rail": "recommended_for_you", "salt": "control-test", "start": (NOW - dt.timedelta(days=1)).isoformat(),
    "end": (NOW + dt.timedelta(days=30)).isoformat(), "default_arm": "control",
    "arms": {"control": {"variant": "recommended_for_you", "share": 0.5},
             "treatment": {"variant": "comedy_featured", "share": 0.5}},
    "primary_metric": "plays_per_impression",
}


@pytest.fixture
def cfg(config_factory, redis_server, redis_client):
    return config_factory({"serve": {"redis_url": redis_server.url, "pointer_cache_seconds": 0.05},
                           "experiments": {"rfy": EXPERIMENT}})


def test_stop_promote_revert_walk_back_and_are_audited(cfg, redis_client):
    decide(cfg, redis_client, "rfy", "stop", by="ana", reason="guardrail")
    assert control.read(cfg, redis_client)["experiments"]["rfy"]["action"] == "stop"
    with pytest.raises(DecisionError, match="already stopped"):
        decide(cfg, redis_client, "rfy", "stop", by="ana")
    decide(cfg, redis_client, "rfy", "promote", "treatment", by="bo")
    o = overrides_of(control.read(cfg, redis_client))
    assert o.promoted == {"rfy": ("treatment", 2)} and not o.stopped
    revert = decide(cfg, redis_client, "rfy", "revert", by="cy")
    assert revert["after"] == {"action": "stop", "arm": "control"}  # back to stopped
    decide(cfg, redis_client, "rfy", "revert", by="cy")
    record = control.read(cfg, redis_client)
    assert record["experiments"] == {}  # back to as configured
    assert [h["action"] for h in record["history"]] == ["stop", "promote", "revert", "revert"]
    assert [h.get("reverted_by") for h in record["history"]] == [4, 3, None, None]
    with pytest.raises(DecisionError, match="nothing to revert"):
        decide(cfg, redis_client, "rfy", "revert")
    audit = [json.loads(line) for line in control.audit_path(cfg).read_text().splitlines()]
    assert [(a["seq"], a["action"], a["by"]) for a in audit] == [(1, "stop", "ana"), (2, "promote", "bo"),
                                                                  (3, "revert", "cy"), (4, "revert", "cy")]


def test_bad_decisions_name_the_problem(cfg, redis_client):
    with pytest.raises(DecisionError, match="experiments.nope: no such experiment"):
        decide(cfg, redis_client, "nope", "stop")
    with pytest.raises(DecisionError, match="no arm 'best'"):
        decide(cfg, redis_client, "rfy", "promote", "best")
    redis_client.set(control.overrides_key("skyrec"), b"{garbage")
    with pytest.raises(DecisionError, match="unreadable overrides record"):
        decide(cfg, redis_client, "rfy", "stop")


def test_concurrent_deciders_never_lose_a_change(cfg, redis_server):
    """Two operators at once: compare-and-set keeps both changes in the history (none overwritten)."""
    import threading

    errors: list[Exception] = []

    def run(who: str) -> None:
        client = redis.Redis.from_url(redis_server.url)
        for _ in range(10):
            for action, arm in (("promote", "treatment"), ("revert", None)):
                try:
                    decide(cfg, client, "rfy", action, arm, by=who)
                except DecisionError as exc:  # the other one got there first: a legitimate refusal
                    errors.append(exc)
        client.close()

    threads = [threading.Thread(target=run, args=(w,)) for w in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client = redis.Redis.from_url(redis_server.url)
    record = control.read(cfg, client)
    audit = control.audit_path(cfg).read_text().splitlines()
    assert record["seq"] == len(record["history"]) == len(audit) == 40 - len(errors)
    assert [h["seq"] for h in record["history"]] == list(range(1, record["seq"] + 1))


def test_the_api_applies_decisions_without_a_read_per_request(cfg, redis_client):
    from skyrec.experiments.runtime import ExperimentsRuntime

    calls = {"get": 0}

    class Counting:
        def __init__(self, inner):
            self.inner = inner

        async def get(self, key):
            calls["get"] += 1
            await asyncio.sleep(calls.get("delay", 0.0))
            return await self.inner.get(key)

    async def scenario() -> None:
        import redis.asyncio as aioredis

        inner = aioredis.Redis.from_url(cfg.serve.redis_url)
        rt = ExperimentsRuntime.from_config(cfg, lambda: Counting(inner))
        users = [f"u{i}" for i in range(400)]
        arms = set()
        for u in users:
            arms.add((await rt.assign("recommended_for_you", u)).arm)
            await asyncio.sleep(0)  # let any background read run, as a server's loop would
        assert arms == {"control", "treatment"} and calls["get"] <= 2  # 400 requests within the ttl: one read
        calls["delay"] = 0.3  # a slow Redis: a stale cache is refreshed behind the requests, none waits for it
        await asyncio.sleep(0.06)
        started = time.perf_counter()
        await rt.assign("recommended_for_you", "u1")
        assert time.perf_counter() - started < 0.05
        await asyncio.sleep(0.35)
        calls["delay"] = 0.0
        assert (await rt.assign("comedy_featured", "u1")).experiment is None
        decide(cfg, redis_client, "rfy", "promote", "treatment", by="t")
        await asyncio.sleep(0.06)
        await rt.assign("recommended_for_you", "u1")  # stale: schedules the background refresh
        await asyncio.sleep(0.02)
        served = {await rt.assign("recommended_for_you", u) for u in users}
        assert {(a.arm, a.variant, a.in_experiment) for a in served} == {("treatment", "comedy_featured", False)}
        assert calls["get"] <= 5
        await inner.aclose()

    asyncio.run(scenario())


def test_status_counts_and_the_cli(cfg, redis_client, monkeypatch):
    from skyrec.cli import app

    out = control.status(cfg, redis_client, "rfy", sample=4000)
    assert out["phase"] == "live" and out["decision"] is None
    split = out["split_while_live"]
    assert abs(split["control"] - 2000) < 200 and split["control"] + split["treatment"] == 4000
    assert sum(out["served_now"].values()) == 4000

    monkeypatch.setenv("SKYREC__SERVE__REDIS_URL", cfg.serve.redis_url)
    monkeypatch.setenv("SKYREC__EXPERIMENTS", json.dumps({"rfy": EXPERIMENT}))
    runner = CliRunner()
    r = runner.invoke(app, ["experiment", "promote", "rfy", "treatment", "--by", "ana", "-m", "won"])
    assert r.exit_code == 0, r.output
    assert "promote recorded (#1 by ana" in r.output
    r = runner.invoke(app, ["experiment", "status", "rfy"])
    assert r.exit_code == 0, r.output
    assert "decision in force: promote arm treatment" in r.output and "treatment (comedy_featured)" in r.output
    assert overrides_of(control.read(cfg, redis_client)) == Overrides(promoted={"rfy": ("treatment", 1)})
    r = runner.invoke(app, ["experiment", "promote", "rfy", "nope"])
    assert r.exit_code == 1 and "no arm 'nope'" in r.output
    r = runner.invoke(app, ["experiment", "revert", "rfy"])
    assert r.exit_code == 0 and "now as configured" in r.output
