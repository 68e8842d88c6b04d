"""Gates checked before a commit. A failed gate commits nothing and raises ``GateFailed``;
an operator can override a gate explicitly for one run (``--override NAME``)."""

from __future__ import annotations

import difflib
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

#: every gate a run can override (``--override NAME``, run conf ``{"overrides": [NAME]}``) and what it judges;
#: a gate added to a job is added here (tests/core/test_gates.py checks the jobs' gate names against it)
GATES: dict[str, str] = {
    "volume": "activity rows of an interval against recent runs (ingest_activity, backfill_activity)",
    "predictions_volume": "recommendation keys against recent runs (compute_predictions)",
    "error_rate": "the share of quarantined records (ingests, build_catalogue, create_dataset, ingest_feedback)",
    "all_rejected": "an input whose every record was rejected (ingest_activity, ingest_feedback)",
    "empty_source": "a metadata source that lists no object (sync_metadata)",
    "empty_catalogue": "a catalogue without programmes (build_catalogue)",
    "quality": "the model against the baseline and the published model (evaluate; publish_model follows it)",
    "disk": "free disk space before a job starts (the Airflow task's preflight)",
    "selftest": "the selftest job's gate, failing on request (tests of the orchestration)",
}


class UnknownGate(ValueError):
    """An override names no gate: a typo would otherwise override nothing, silently."""


def check_overrides(names: Iterable[str], *, where: str = "--override") -> tuple[str, ...]:
    """``names`` when every one is a gate of ``GATES``; else an ``UnknownGate`` naming the unknown ones, the
    closest known name and every known gate (``where``: how the user gave them)."""
    names = tuple(names)
    unknown = [n for n in names if n not in GATES]
    if unknown:
        near = {n: difflib.get_close_matches(n, list(GATES), n=1) for n in unknown}
        guesses = "; ".join(f"did you mean {m[0]!r} for {n!r}?" for n, m in near.items() if m)
        raise UnknownGate(f"{where}: unknown gate{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(repr(n) for n in unknown)}{' (' + guesses + ')' if guesses else ''}; "
                          f"known gates: {', '.join(GATES)}")
    return names


class GateFailed(RuntimeError):
    """A failed gate. ``hint``: what the operator can do, when it is not the default (overriding ``gate`` for
    one run on the failing step itself)."""

    def __init__(self, gate: str, message: str, details: dict | None = None, *, hint: str | None = None) -> None:
        hint = hint if hint is not None else f"override for one run with --override {gate}"
        super().__init__(f"gate {gate!r} failed: {message} ({hint})")
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


def all_rejected_gate(committed: int, rejected_rows: int, rejected_files: int = 0, *,
                      name: str = "all_rejected") -> GateResult:
    """An input whose data was all rejected fails: nothing committed while records or files were rejected.

    An empty output would read downstream as "no activity in this interval" and, being committed, would
    never be rebuilt; failing keeps the interval visibly missing until the input is fixed (or replayed).
    """
    ok = committed > 0 or (rejected_rows == 0 and rejected_files == 0)
    msg = (f"{committed} records committed, {rejected_rows} records and {rejected_files} files rejected"
           + ("" if ok else ": every record of the input was rejected, refusing to commit an empty output"))
    return GateResult(name, ok, msg, details={"committed": committed, "rejected_rows": rejected_rows,
                                              "rejected_files": rejected_files})


def empty_gate(count: int, *, name: str, what: str, hint: str) -> GateResult:
    """Fails when an output would hold none of ``what``: a first sync of an empty or mistyped source would
    otherwise commit an empty catalogue, and every later activity record would be rejected as an unknown
    item (an all-rejected ingest, far from the cause). ``hint`` says where to look."""
    ok = count > 0
    msg = f"{count} {what}" + ("" if ok else f": refusing to commit an empty output ({hint})")
    return GateResult(name, ok, msg, details={"count": count})


class InvariantBroken(RuntimeError):
    """The ingest accounting does not add up: a record would be lost or doubled. Nothing is committed."""


def ingest_invariant(unit: str, *, records_in: int, committed: int, quarantined: dict[str, int],
                     filtered: dict[str, int]) -> dict:
    """The ingest invariant ``in = committed + quarantined + filtered`` (every term with its reasons).

    Returns the terms (for the run manifest's meta, so anyone can check them); raises InvariantBroken when
    they do not add up -- that is a bug in the job, never a property of the input.
    """
    q = {k: int(v) for k, v in sorted(quarantined.items()) if v}
    f = {k: int(v) for k, v in sorted(filtered.items()) if v}
    total = committed + sum(q.values()) + sum(f.values())
    terms = {"unit": unit, "in": int(records_in), "committed": int(committed), "quarantined": q, "filtered": f,
             "holds": total == records_in}
    if total != records_in:
        raise InvariantBroken(f"ingest invariant broken for {unit}: in {records_in} != committed {committed} "
                              f"+ quarantined {sum(q.values())} {q} + filtered {sum(f.values())} {f}")
    return terms
