from __future__ import annotations

import pytest

from skyrec.gates import GateFailed, disk_preflight, enforce, error_rate_gate, volume_gate


def test_volume_gate_needs_history_then_bounds_ratio() -> None:
    assert volume_gate(1000, [10, 10], min_ratio=0.5, max_ratio=2, min_history=3).passed
    ok = volume_gate(110, [100, 90, 105, 95], min_ratio=0.5, max_ratio=2, min_history=3)
    assert ok.passed and ok.details["ratio"] == pytest.approx(110 / 97.5)
    doubled = volume_gate(201, [100, 100, 100], min_ratio=0.5, max_ratio=2, min_history=3)
    assert not doubled.passed and "2.01x" in doubled.message
    assert not volume_gate(40, [100, 100, 100], min_ratio=0.5, max_ratio=2, min_history=3).passed


def test_enforce_raises_unless_overridden_for_this_run() -> None:
    bad = volume_gate(1000, [100, 100, 100], min_ratio=0.5, max_ratio=2, min_history=3)
    with pytest.raises(GateFailed, match="--override volume"):
        enforce(bad, [])
    assert enforce(bad, ["volume"]).overridden


def test_error_rate_and_disk() -> None:
    assert error_rate_gate(5, 100, max_error_rate=0.05).passed
    assert not error_rate_gate(6, 100, max_error_rate=0.05).passed
    assert error_rate_gate(0, 0, max_error_rate=0.0).passed
    assert not disk_preflight(10_000, 12_000, headroom=1.5).passed
    assert disk_preflight(10_000, 15_000, headroom=1.5).passed


def test_volume_gate_does_not_judge_noise_but_judges_real_volumes() -> None:
    quiet = volume_gate(3, [8, 10, 9], min_ratio=0.5, max_ratio=2, min_history=3, min_volume=100)
    assert quiet.passed and "too small to judge" in quiet.message
    spike = volume_gate(300, [8, 10, 9], min_ratio=0.5, max_ratio=2, min_history=3, min_volume=100)
    assert not spike.passed  # a jump from noise to real volume is still caught
    drop = volume_gate(40, [1000, 1000, 1000], min_ratio=0.5, max_ratio=2, min_history=3, min_volume=100)
    assert not drop.passed


def test_an_override_naming_no_gate_is_refused_with_the_known_gates() -> None:
    from skyrec.gates import GATES, UnknownGate, check_overrides

    assert check_overrides(["quality", "volume"]) == ("quality", "volume")
    with pytest.raises(UnknownGate) as info:
        check_overrides(["quality", "qualty"], where="--override")
    msg = str(info.value)
    assert msg.startswith("--override: unknown gate 'qualty'") and "did you mean 'quality'" in msg
    assert all(name in msg for name in GATES)


def test_every_gate_the_code_names_can_be_overridden() -> None:
    """A gate added to a job without adding it to GATES could not be overridden (its name would be refused)."""
    import re
    from pathlib import Path

    from skyrec.gates import GATES

    src = Path(__file__).resolve().parents[2] / "src" / "skyrec"
    named = set()
    for path in src.rglob("*.py"):
        text = path.read_text()
        named |= set(re.findall(r"GateResult\(\s*\"(\w+)\"", text))  # GateResult("volume", ...)
        named |= set(re.findall(r"GateFailed\(\s*\"(\w+)\"", text))
        named |= set(re.findall(r"_gate\([^()]*(?:\([^()]*\)[^()]*)*name=\"(\w+)\"", text, re.S))  # *_gate(.., name=)
        named |= set(re.findall(r"name: str = \"(\w+)\"", text)) if path.name == "gates.py" else set()
        named |= set(re.findall(r"^GATE = \"(\w+)\"", text, re.M))
    assert {"volume", "quality", "predictions_volume", "empty_source", "disk"} <= named  # the scan finds them
    assert named <= set(GATES), sorted(named - set(GATES))


def test_a_gate_failure_can_carry_its_own_hint() -> None:
    assert str(GateFailed("quality", "held")).endswith("(override for one run with --override quality)")
    custom = GateFailed("quality", "held", {}, hint="override it on the evaluate step")
    assert str(custom) == "gate 'quality' failed: held (override it on the evaluate step)"
