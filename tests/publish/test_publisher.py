"""The pointer switch, rollback and cleanup as core functions (what the API's admin endpoint calls)."""

from __future__ import annotations

import json

import pytest

from skyrec.publish import current, rollback
from skyrec.publish.keys import Keys
from skyrec.publish.publisher import PublishError, cleanup, publish_versioned

pytestmark = pytest.mark.integration
K = Keys("skyrec")


def _publish(client, pub: str, *, keep: int = 2, fail_verify: bool = False) -> dict:
    def load() -> int:
        client.set(K.rec("v", pub, "u1"), json.dumps([["i1", 1.0]]))
        client.set(K.fallback("v", pub), "[]")
        client.hset(K.items("v", pub), "i1", "{}")
        return 3

    def verify(c, p: str) -> None:
        if fail_verify:
            raise PublishError("probe differs")

    return publish_versioned(client, K, "v", {"publication": pub}, load=load, expected_commands=3, verify=verify,
                             keep_versions=keep)


def test_switch_rollback_cleanup(redis_client) -> None:
    assert current(redis_client, K, "v") is None
    with pytest.raises(LookupError, match="no previous publication"):
        rollback(redis_client, K, "v")
    for p in ("p1", "p2", "p3"):
        assert _publish(redis_client, p)["publication"] == p
    assert current(redis_client, K, "v")["publication"] == "p3"
    assert not redis_client.exists(K.rec("v", "p1", "u1"), K.fallback("v", "p1"), K.items("v", "p1"))
    assert redis_client.exists(K.rec("v", "p2", "u1"))
    res = rollback(redis_client, K, "v")
    assert (res["from"], res["to"]) == ("p3", "p2")
    assert current(redis_client, K, "v")["publication"] == "p2"
    # p3 is newer than the served p2 (like a load in progress): kept until a newer publication is served
    assert cleanup(redis_client, K, "v", 2)["removed"] == []
    _publish(redis_client, "p4")
    assert not redis_client.exists(K.rec("v", "p3", "u1"))
    assert [p["publication"] for p in [current(redis_client, K, "v")]] == ["p4"]
    assert rollback(redis_client, K, "v")["to"] == "p2"


def test_failed_verification_does_not_switch(redis_client) -> None:
    _publish(redis_client, "p1")
    with pytest.raises(PublishError, match="probe"):
        _publish(redis_client, "p2", fail_verify=True)
    assert current(redis_client, K, "v")["publication"] == "p1"
