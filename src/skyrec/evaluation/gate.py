"""The model quality gate: a new model must not be worse than the last published one beyond a tolerance,
and (when configured) must beat the popularity baseline evaluated in the same run."""

from __future__ import annotations

from skyrec.gates import GateResult

GATE = "quality"


def quality_gate(new: float | None, baseline: float | None, published: float | None, *, metric: str,
                 tolerance: float, must_beat_baseline: bool, published_version: str | None = None) -> GateResult:
    """``tolerance`` is relative: with 0.05 the new model may score down to 95% of the published one."""
    details = {"metric": metric, "new": new, "baseline": baseline, "published": published,
               "published_model_version": published_version, "tolerance": tolerance,
               "must_beat_baseline": must_beat_baseline}
    if new is None:
        return GateResult(GATE, False, f"{metric} could not be computed (no test users)", details=details)
    problems = []
    if must_beat_baseline and baseline is not None and not new > baseline:
        problems.append(f"{metric} {new:.4f} does not beat the baseline's {baseline:.4f}")
    if published is not None and new < published * (1.0 - tolerance):
        problems.append(f"{metric} {new:.4f} is below the published model's {published:.4f} "
                        f"({published_version}) by more than {tolerance:.0%}")
    if problems:
        return GateResult(GATE, False, "; ".join(problems), details=details)
    parts = [f"{metric} {new:.4f}"]
    if baseline is not None:
        parts.append(f"baseline {baseline:.4f}")
    parts.append(f"published {published:.4f}" if published is not None else "no published model yet")
    return GateResult(GATE, True, ", ".join(parts), details=details)
