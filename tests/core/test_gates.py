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
