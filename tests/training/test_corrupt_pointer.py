"""A published-model pointer whose content is corrupt (truncated, edited by hand): never read as "nothing
published". The gate cannot compare with it and says so (its insufficient-evidence policy decides), a job
that needs it fails as bad input naming the pointer, and the next publication replaces it."""

from __future__ import annotations

import pytest
from _train_helpers import FAST, run_job, train_all

from skyrec.jobs.base import EXIT_GATE, EXIT_OK
from skyrec.models.artefact import published_model_pointer
from skyrec.storage import CorruptPointer

CORRUPT = {"truncated": b'{"path": "models/als/v1/run=2026', "a list": b"[1, 2]", "empty object": b"{}",
           "no path": b'{"model": "als"}', "not utf-8": b"\xff\xfe{"}


@pytest.mark.parametrize("content", list(CORRUPT.values()), ids=list(CORRUPT))
def test_a_corrupt_pointer_is_an_error_naming_it(seeded, content: bytes) -> None:
    _, lake, _ = seeded
    rel = published_model_pointer("als", "v1")
    full = lake.abspath(rel)
    lake.fs.makedirs(full.rsplit("/", 1)[0], exist_ok=True)
    lake.fs.pipe_file(full, content)
    with pytest.raises(CorruptPointer, match=f"pointer {rel} is corrupt"):
        lake.read_pointer(rel)
    assert lake.read_pointer("pointers/models/none/v1.json") is None  # absent is still "none"


@pytest.mark.parametrize("policy", ["hold", "publish_with_alert"])
def test_the_gate_cannot_compare_with_a_corrupt_published_pointer(seeded, config_factory, policy: str) -> None:
    _, lake, _ = seeded
    config = config_factory({**FAST, "training": {**FAST["training"],
                                                  "quality_gate": {"insufficient_evidence": policy}}}, rails="als")
    assert all(code == EXIT_OK for code, _ in train_all(config, hour=1).values())
    rel = published_model_pointer("als", "v1")
    lake.fs.pipe_file(lake.abspath(rel), b"{}")
    train_all(config, hour=2, upto="train")
    code, payload = run_job(config, "evaluate", hour=2)
    message = payload.get("error") or payload["summary"]["gate"]["message"]
    assert f"the published model cannot be compared: pointer {rel} is corrupt" in message, payload
    assert "no published model yet" not in message
    if policy == "hold":
        assert code == EXIT_GATE and "policy 'hold': not published" in message
        return
    assert code == EXIT_OK
    code, payload = run_job(config, "publish_model", hour=2)
    assert code == EXIT_OK and f"pointer {rel} is corrupt" in payload["summary"]["replaced_corrupt_pointer"]
    assert lake.read_pointer(rel)["model_version"] == "v1.20260301T020000"
