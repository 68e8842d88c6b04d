"""A publish_predictions process killed with SIGKILL mid-load, as a worker dies: what it loaded stays out of
service, `skyrec gc` removes all of it once the grace has passed (its share of the users' plays too, and never
the plays the served publication holds), and a retry with the same publication id publishes it whole."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time

import pytest
import synth

from skyrec.jobs.base import RunInfo, execute
from skyrec.publish import current, removal
from skyrec.publish.keys import Keys
from skyrec.storage import Lake

VARIANT = "drama_featured"
pytestmark = pytest.mark.integration
OVERRIDES = {"precompute": {"k": 8, "batch_size": 64, "shard_users": 500, "threads": 1},
             "publish": {"redis_url": None, "keep_versions": 2, "probe_users": 10, "history_items": 5}}


def _run(hour: int) -> RunInfo:
    return RunInfo(dag_id="precompute_recommendations", run_id=f"r{hour}", task_id="compute_predictions",
                   logical_date=synth.AT + dt.timedelta(hours=hour))


def _job(name: str, cfg, hour: int) -> dict:
    code, payload = execute(name, config=cfg, run=_run(hour), params={"variant": VARIANT})
    assert code == 0, payload.get("traceback") or payload.get("error")
    return payload["summary"]


def _env(cfg, redis_url: str) -> dict[str, str]:
    env = {**os.environ, "SKYREC_HOME": str(cfg.paths.home)}
    for section, values in OVERRIDES.items():
        for name, value in values.items():
            env[f"SKYREC__{section.upper()}__{name.upper()}"] = str(redis_url if value is None else value)
    return env


def _keys_of(client, keys: Keys, pub: str) -> int:
    return sum(1 for p in keys.publication_pattern(VARIANT, pub) for _ in client.scan_iter(match=p, count=1000))


def _hist_keys(client, keys: Keys, activity: str) -> int:
    return sum(1 for _ in client.scan_iter(match=keys.hist_pattern(activity), count=1000))


def test_a_load_killed_midway_is_collected_and_its_retry_publishes_it_whole(config_factory, redis_server,
                                                                           redis_client) -> None:
    cfg = config_factory({**OVERRIDES, "publish": {**OVERRIDES["publish"], "redis_url": redis_server.url}})
    synth.build(cfg, n_users=3000, n_items=300, activity=True)
    keys = Keys(cfg.publish.key_prefix)
    _job("compute_predictions", cfg, 0)
    served = _job("publish_predictions", cfg, 0)
    ns = served["history"]["namespace"]
    plays = _hist_keys(redis_client, keys, ns)
    own = _keys_of(redis_client, keys, served["publication"])
    pred = Lake.from_config(cfg).require(_job("compute_predictions", cfg, 1)["outputs"][0])
    pub = pred.meta["publication"]
    assert pub != served["publication"]

    env = _env(cfg, redis_server.url)
    proc = subprocess.Popen([sys.executable, "-m", "skyrec", "job", "publish_predictions", "--param",
                             f"variant={VARIANT}", "--logical-date", _run(1).logical_date.isoformat()],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, before = time.monotonic() + 120, redis_client.dbsize()
        while redis_client.dbsize() == before:  # its first keys are in: the load is under way
            assert proc.poll() is None, proc.stderr.read()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the publish job never started loading"
        redis_client.execute_command("CLIENT", "PAUSE", "30000", "WRITE")  # it stops at its next write ...
        assert current(redis_client, keys, VARIANT)["publication"] == served["publication"]  # ... before any switch
        time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)  # ... and dies there
        proc.wait(30)
        redis_client.execute_command("CLIENT", "UNPAUSE")
    assert current(redis_client, keys, VARIANT)["publication"] == served["publication"]
    assert redis_client.zscore(keys.publications(VARIANT), pub) is not None
    left = _keys_of(redis_client, keys, pub)
    assert left > 0  # what it loaded before it died
    print(f"killed with {left} of its keys loaded")

    # within the grace it may still be loading: neither listed nor removed
    gc = subprocess.run([sys.executable, "-m", "skyrec", "gc", "--dry-run"], env=env, capture_output=True, text=True,
                        timeout=120)
    assert gc.returncode == 0 and "0 abandoned publication(s) found" in gc.stdout, gc.stdout + gc.stderr
    gc = subprocess.run([sys.executable, "-m", "skyrec", "gc"], env=env, capture_output=True, text=True, timeout=120)
    assert gc.returncode == 0 and "0 abandoned publication(s) removed" in gc.stdout, gc.stdout + gc.stderr
    assert redis_client.zscore(keys.publications(VARIANT), pub) is not None
    # past it, gone: every key it wrote, its registration, its claim on the plays, and nothing the served one holds
    gc = subprocess.run([sys.executable, "-m", "skyrec", "gc", "--grace-hours", "0"], env=env, capture_output=True,
                        text=True, timeout=120)
    assert gc.returncode == 0 and f"removed publication {VARIANT}/{pub} (abandoned" in gc.stdout, gc.stdout
    assert _keys_of(redis_client, keys, pub) == 0
    assert redis_client.zscore(keys.publications(VARIANT), pub) is None
    assert redis_client.smembers(keys.hist_refs(ns)) == {f"{VARIANT}/{served['publication']}".encode()}
    assert _hist_keys(redis_client, keys, ns) == plays
    assert _keys_of(redis_client, keys, served["publication"]) == own
    assert removal.abandoned(redis_client, keys, VARIANT, 0.0) == []

    # the retry (same publication id) publishes it whole
    retry = _job("publish_predictions", cfg, 1)
    assert retry["publication"] == pub and current(redis_client, keys, VARIANT)["publication"] == pub
    assert _keys_of(redis_client, keys, pub) == int(pred.meta["keys"]) - plays, pred.meta
