"""The model quality gate: decisions on paired comparisons, never on two loose figures.

Inputs are the paired comparisons of ``skyrec.evaluation.stats.paired_comparison`` on the same users and
the same split: the new model against the baseline (evaluated in the same run) and against the last
published model (its artefact re-scored on this run's split, ``skyrec.evaluation.compare``). Rules:

1. Fewer than ``min_users`` evaluable users: *insufficient evidence*; nothing is decided on the figures,
   the configured policy decides (``hold``: fail, publish nothing; ``publish_with_alert``: pass, with an
   alert recorded for the notifier).
2. ``must_beat_baseline``: the paired difference new - baseline must be above zero with confidence (the
   lower end of its interval > 0); otherwise the gate fails ("does not beat the baseline beyond noise").
3. Against the published model: the gate fails only when the new model is worse than
   ``(1 - tolerance)`` x published with confidence (the upper end of the interval of
   new - (1 - tolerance) x published < 0). When the published model cannot be compared on this split
   (different protocol and no artefact to re-score, or fewer than ``min_users`` shared users), that
   comparison is insufficient evidence and the policy decides; the message says why.
4. A figure that is not a finite number (the metric, or a comparison's difference or interval: NaN, +-inf)
   fails the gate: nothing can be shown with it, and a NaN compares false with every bound, so without
   this rule it would pass silently.
"""

from __future__ import annotations

import math
from typing import Any

from skyrec.gates import GateResult

GATE = "quality"
POLICIES = ("hold", "publish_with_alert")


#: how a verdict names a comparison with the published model's parameters refit on this split
_REFIT = ", its parameters refit on this split"


def _ci(c: dict[str, Any]) -> str:
    lo, hi = c.get("ci") or [None, None]
    if lo is None or hi is None:
        return "no interval"
    # against the published model the interval is of new - (1 - tolerance) x published: say so, or a tie
    # would read as a gain of the tolerance
    factor = c.get("factor", 1.0)
    what = "difference" if factor == 1.0 else f"new - {factor:g} x published"
    return f"{what} {c['difference']:+.4f}, {c.get('confidence', 0.95):.0%} CI [{lo:+.4f}, {hi:+.4f}], " \
           f"{c['users']} users"


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _broken(c: dict[str, Any]) -> bool:
    """A paired comparison whose difference or interval bounds are there but not finite numbers."""
    values = [c.get("difference"), *(c.get("ci") or [])]
    return any(v is not None and not _finite(v) for v in values)


def _hold_to(c: dict[str, Any], metric: str, min_users: int, tolerance: float, evidence: list[str],
             problems: list[str], *, cannot: str, few: str, broken: str, below: tuple[str, str]) -> None:
    """The new model held to another (the published one, or what rails serve now): ``c`` its paired
    comparison, or ``{"comparable": False, "reason": ...}``. Too few users or not comparable is evidence
    missing; a comparison that is not finite, or new < (1 - tolerance) x other beyond noise, a problem."""
    if not c.get("comparable", True):
        evidence.append(f"{cannot}: {c.get('reason')}")
    elif c["users"] < min_users:
        evidence.append(f"only {c['users']} users can be compared with {few} (plays it has not seen; "
                        f"min_users {min_users})")
    elif _broken(c):
        problems.append(f"the paired comparison of {metric} with {broken} is not finite ({_ci(c)})")
    elif (hi := (c.get("ci") or [None, None])[1]) is not None and hi < 0:
        problems.append(f"{metric} {c['mean_a']:.4f} is below {below[0]}{c['mean_b']:.4f}{below[1]} by more than "
                        f"{tolerance:.0%} beyond noise ({_ci(c)}, same users and split)")


def quality_gate(*, metric: str, new: float | None, users: int, min_users: int, policy: str,
                 baseline: dict[str, Any] | None, published: dict[str, Any] | None, tolerance: float,
                 must_beat_baseline: bool, served: list[dict[str, Any]] | None = None) -> GateResult:
    """Decide. ``baseline``/``published``: paired comparisons (or None: no such model); ``published`` may
    instead be ``{"comparable": False, "reason": ...}``. ``served``: the same against each model that rails
    moving to this one serve now (``rails``, ``model``, ``model_version``), held to the same tolerance: a rail
    that changes model must not get worse unseen."""
    if policy not in POLICIES:
        raise ValueError(f"training.quality_gate.insufficient_evidence: {policy!r} is not one of {POLICIES}")
    details: dict[str, Any] = {"metric": metric, "new": new, "users": users, "min_users": min_users,
                               "policy": policy, "tolerance": tolerance, "must_beat_baseline": must_beat_baseline,
                               "baseline_comparison": baseline, "published_comparison": published,
                               "served_comparisons": served or [], "insufficient_evidence": False}
    if new is None and users > 0:
        return GateResult(GATE, False, f"{metric} is not among this evaluation's figures", details=details)
    if new is not None and not _finite(new):
        return GateResult(GATE, False, f"{metric} is {new}, not a finite number: nothing can be shown with it",
                          details=details)
    if published is not None and published.get("same_model"):  # re-evaluating the model that is published
        details["published_comparison"] = published = None
        details["published_is_this_model"] = True
    evidence: list[str] = []
    problems: list[str] = []
    if users == 0:  # below any min_users: the policy decides, as for a few users (a global holdout of new users)
        evidence.append(f"no evaluable test users, {metric} could not be computed "
                        f"(training.quality_gate.min_users: {min_users})")
    elif users < min_users:
        evidence.append(f"only {users} evaluable users (training.quality_gate.min_users: {min_users})")
    else:
        if must_beat_baseline and baseline is None:
            problems.append(f"no paired comparison of {metric} with the baseline: it cannot be shown to beat it")
        elif must_beat_baseline and baseline is not None:
            lo = (baseline.get("ci") or [None])[0]
            if _broken(baseline):
                problems.append(f"the paired comparison of {metric} with the baseline is not finite ({_ci(baseline)})")
            elif lo is None or not lo > 0:
                problems.append(f"{metric} {baseline['mean_a']:.4f} does not beat the baseline's "
                                f"{baseline['mean_b']:.4f} beyond noise ({_ci(baseline)})")
        if published is not None:
            version = published.get("model_version")
            _hold_to(published, metric, min_users, tolerance, evidence, problems,
                     cannot="the published model cannot be compared",
                     few=f"the published model {version}", broken=f"the published model {version}",
                     below=("the published model's ", f" ({version}{_REFIT if published.get('refit') else ''})"))
        for other in served or ():
            who = (f"what rails {', '.join(other.get('rails') or ())} serve now ({other.get('model')} "
                   f"{other.get('model_version')}{_REFIT if other.get('refit') else ''})")
            _hold_to(other, metric, min_users, tolerance, evidence, problems, cannot=f"{who} cannot be compared",
                     few=who, broken=who, below=("the ", f" of {who}"))
    if problems:
        return GateResult(GATE, False, "; ".join(problems), details=details)
    parts = [f"{metric} {new:.4f} on {users} users" if new is not None else f"no {metric}"]
    if baseline is not None and users >= min_users:
        parts.append(f"vs baseline {baseline['mean_b']:.4f} ({_ci(baseline)})")
    if details.get("published_is_this_model"):
        parts.append("this model is the one published (nothing else to compare it with)")
    elif published is None:
        parts.append("no published model yet")
    elif published.get("comparable", True) and published["users"] >= min_users:
        parts.append(f"vs published {published['mean_b']:.4f}{_REFIT if published.get('refit') else ''} on the "
                     f"same users ({_ci(published)})")
    for other in served or ():
        if users >= min_users and other.get("comparable", True) and other["users"] >= min_users:
            parts.append(f"vs {other.get('model')} {other.get('model_version')}"
                         f"{_REFIT if other.get('refit') else ''}, which rails {', '.join(other.get('rails') or ())} "
                         f"serve now, {other['mean_b']:.4f} on the same users ({_ci(other)})")
    if evidence:
        details["insufficient_evidence"] = True
        reason = "insufficient evidence: " + "; ".join(evidence)
        if policy == "hold":
            return GateResult(GATE, False, f"{reason}; policy 'hold': not published", details=details)
        # said when the gate decides, before publish_model runs (which still refuses a model older than the one
        # served): "passed for publication", not "published"
        details["alert"] = (f"{reason}; passed for publication under policy 'publish_with_alert' "
                            f"({', '.join(parts)})")
        return GateResult(GATE, True, details["alert"], details=details)
    return GateResult(GATE, True, ", ".join(parts), details=details)
