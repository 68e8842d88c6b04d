"""Gates checked before a commit. A failed gate commits nothing and raises ``GateFailed``;
an operator can override a gate explicitly for one run (``--override NAME``)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


class GateFailed(RuntimeError):
    def __init__(self, gate: str, message: str, details: dict | None = None) -> None:
        super().__init__(f"gate {gate!r} failed: {message} (override for one run with --override {gate})")
        self.gate = gate
        self.details = details or {}


@dataclass
class GateResult:
    gate: str
    passed: bool
    message: str
    overridden: bool = False
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"gate": self.gate, "passed": self.passed, "overridden": self.overridden,
                "message": self.message, **self.details}


def enforce(result: GateResult, overrides: Iterable[str]) -> GateResult:
    if result.passed:
        return result
    if result.gate in set(overrides):
        result.overridden = True
        return result
    raise GateFailed(result.gate, result.message, result.details)


def volume_gate(current: int, history: Sequence[int], *, min_ratio: float, max_ratio: float,
                min_history: int, min_volume: int = 0, name: str = "volume") -> GateResult:
    """Current volume against the median of recent committed runs.

    Below ``min_volume`` (current and median both) a ratio is noise -- 3 events against 8 in a quiet night
    hour is not a data problem -- so the gate passes and says why; volumes that matter are always judged.
    """
    if len(history) < min_history:
        return GateResult(name, True, f"{len(history)} earlier runs (< {min_history}): not enough history yet",
                          details={"current": current, "history": list(history)})
    median = statistics.median(history)
    if current < min_volume and median < min_volume:
        return GateResult(name, True, f"volume {current} and median {median:g} are below min_volume {min_volume}: "
                          "too small to judge", details={"current": current, "median": median,
                                                         "history": list(history)})
    ratio = (current / median) if median > 0 else (float("inf") if current > 0 else 1.0)
    ok = min_ratio <= ratio <= max_ratio
    msg = (f"volume {current} is {ratio:.2f}x the median {median:g} of the last {len(history)} runs "
           f"(allowed {min_ratio}..{max_ratio})")
    return GateResult(name, ok, msg, details={"current": current, "median": median, "ratio": ratio,
                                              "history": list(history)})


def error_rate_gate(bad: int, total: int, *, max_error_rate: float, name: str = "error_rate") -> GateResult:
    rate = bad / total if total else 0.0
    ok = rate <= max_error_rate
    msg = f"{bad} of {total} records quarantined ({rate:.2%}, allowed {max_error_rate:.2%})"
    return GateResult(name, ok, msg, details={"bad": bad, "total": total, "rate": rate})


def disk_preflight(required_bytes: int, free_bytes: int, *, headroom: float = 1.5, name: str = "disk") -> GateResult:
    need = int(required_bytes * headroom)
    ok = free_bytes >= need
    msg = f"needs ~{need / 1e9:.2f} GB (input-based estimate x{headroom}), {free_bytes / 1e9:.2f} GB free"
    return GateResult(name, ok, msg, details={"required_bytes": need, "free_bytes": free_bytes})
