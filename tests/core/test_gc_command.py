"""`skyrec gc` and `skyrec retire` as an operator runs them: subprocesses over a local lake with abandoned and
live staging, and a real serving Redis with loads nobody finished and a rail taken out of the configuration."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from skyrec.publish import current, histories, removal
from skyrec.publish.keys import Keys
from skyrec.storage import Lake, Producer

K = Keys("skyrec")


def _env(skyrec_home: Path, redis_url: str) -> dict[str, str]:
    return {**os.environ, "SKYREC_HOME": str(skyrec_home), "SKYREC__PUBLISH__REDIS_URL": redis_url}


def _skyrec(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "skyrec", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def _loaded(client, variant: str, pub: str, *, age: float, served: bool = False, activity: str | None = None) -> None:
    """A publication as the publisher leaves it: registered ``age`` seconds ago, keys loaded; ``served``: the
    variant's pointer names it."""
    removal.register(client, K, variant, pub)
    client.zadd(K.publications(variant), {pub: time.time() - age})
    if activity:
        histories.attach(client, K, activity, variant, pub)
        client.set(K.hist(activity, "u1"), "[]")
    client.set(K.rec(variant, pub, "u1"), "[]")
    client.set(K.fallback(variant, pub), "[]")
    client.hset(K.items(variant, pub), "i1", "{}")
    if served:
        client.set(K.current(variant), f'{{"publication": "{pub}", "activity": "{activity}"}}')


def test_gc_command_collects_abandoned_staging_only(config, skyrec_home: Path, redis_server) -> None:
    lake = Lake.from_config(config)
    rel = config.dataset_path("catalogue", run_key="20261123T100000")
    st = lake.stage("catalogue", rel, Producer(task_id="won"))
    with st.open("part-0.bin", rows=1) as fh:
        fh.write(b"a")
    st.commit()
    dead = lake.stage("catalogue", rel, Producer(task_id="dead", host="another-host"), force=True)
    with dead.open("part-0.bin", rows=1) as fh:
        fh.write(b"b")
    young = lake.stage("catalogue", rel, Producer(task_id="young", host="another-host"), force=True)
    old = time.time() - 3 * 86400
    for root, _, files in os.walk(dead.path("")):
        for name in files:
            os.utime(os.path.join(root, name), (old, old))
    env = _env(skyrec_home, redis_server.url)
    cmd = [sys.executable, "-m", "skyrec", "gc"]
    dry = subprocess.run([*cmd, "--dry-run"], env=env, capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert f"would remove {rel}/{dead.staging_rel}" in dry.stdout and Path(dead.path("")).exists()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "1 abandoned item(s) removed" in out.stdout
    assert not Path(dead.path("")).exists()
    assert Path(young.path("")).exists()  # within the grace period
    lake.verify(lake.require(rel))


@pytest.mark.integration
def test_gc_command_removes_loads_nobody_finished_from_redis(skyrec_home: Path, redis_server, redis_client) -> None:
    _loaded(redis_client, "comedy_featured", "c1", age=60.0, served=True)
    _loaded(redis_client, "comedy_featured", "c0", age=3 * 86400)  # a load killed three days ago
    _loaded(redis_client, "comedy_featured", "c2", age=60.0)  # may still be loading
    env = _env(skyrec_home, redis_server.url)
    dry = _skyrec(env, "gc", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would remove publication comedy_featured/c0 (abandoned)" in dry.stdout
    assert redis_client.exists(K.rec("comedy_featured", "c0", "u1"))
    out = _skyrec(env, "gc")
    assert out.returncode == 0, out.stderr
    assert "1 abandoned publication(s) removed" in out.stdout
    assert not redis_client.exists(K.rec("comedy_featured", "c0", "u1"), K.fallback("comedy_featured", "c0"))
    assert redis_client.exists(K.rec("comedy_featured", "c1", "u1"), K.rec("comedy_featured", "c2", "u1")) == 2
    down = _skyrec(_env(skyrec_home, "redis://127.0.0.1:1/0"), "gc")
    assert down.returncode == 1 and "not reachable" in down.stdout  # said, not skipped silently


@pytest.mark.integration
def test_retire_command_removes_an_unconfigured_rail_only(skyrec_home: Path, redis_server, redis_client) -> None:
    ns = Keys.shared_hist_namespace("abc", 10)
    _loaded(redis_client, "old_rail", "o1", age=3 * 86400, activity=ns)  # a load killed, never served
    _loaded(redis_client, "old_rail", "o2", age=60.0, served=True, activity=ns)
    _loaded(redis_client, "comedy_featured", "c1", age=60.0, served=True, activity=ns)
    env = _env(skyrec_home, redis_server.url)
    status = _skyrec(env, "status")
    assert "rail old_rail is in the serving Redis but not in the configuration" in status.stdout, status.stdout
    configured = _skyrec(env, "retire", "comedy_featured")
    assert configured.returncode == 2 and "is in the configuration" in configured.stderr
    assert current(redis_client, K, "comedy_featured")["publication"] == "c1"
    unknown = _skyrec(env, "retire", "no_such_rail")
    assert unknown.returncode == 2 and "nothing published" in unknown.stderr
    dry = _skyrec(env, "retire", "old_rail", "--dry-run")
    assert dry.returncode == 0 and "2 publication(s) to remove" in dry.stdout, dry.stdout
    assert current(redis_client, K, "old_rail")["publication"] == "o2"
    out = _skyrec(env, "retire", "old_rail")
    assert out.returncode == 0, out.stderr
    assert "removed publication old_rail/o1" in out.stdout and "removed publication old_rail/o2" in out.stdout
    assert current(redis_client, K, "old_rail") is None
    assert not any(redis_client.scan_iter(match="skyrec:*:old_rail*"))
    assert redis_client.exists(K.hist(ns, "u1"))  # comedy_featured still serves those plays
    assert redis_client.smembers(K.hist_refs(ns)) == {b"comedy_featured/c1"}
    assert "old_rail" not in _skyrec(env, "status").stdout


def test_status_shows_redis_memory_and_warns_of_a_policy_that_evicts_any_key(skyrec_home: Path, redis_server,
                                                                             redis_client) -> None:
    env = _env(skyrec_home, redis_server.url)
    try:
        redis_client.config_set("maxmemory", 500_000_000)
        out = _skyrec(env, "status")
        shown = " ".join(out.stdout.split())  # as a person reads it, whatever the terminal's wrapping
        assert out.returncode == 0, out.stderr
        assert "of maxmemory 500.0 MB (0%), maxmemory-policy noeviction" in shown and "warning" not in shown, shown
        redis_client.config_set("maxmemory-policy", "allkeys-lru")
        shown = " ".join(_skyrec(env, "status").stdout.split())
        assert "warning: the serving Redis evicts any key when full (maxmemory-policy allkeys-lru)" in shown, shown
    finally:
        redis_client.config_set("maxmemory", 0)
        redis_client.config_set("maxmemory-policy", "noeviction")
