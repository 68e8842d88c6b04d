"""Deterministic assignment of a user to an arm: pure functions, no I/O, cheap enough for the hot path.

``bucket(salt, user_id)`` is the first 8 bytes of BLAKE2b(``salt \\x00 user_id``) read as a big-endian uint64 over
2**64: uniform in [0, 1), the same for the same (salt, user) on every process and machine (sticky), and
unrelated between salts (independent experiments). A second bucket over ``salt \\x00 traffic \\x00 user_id``
decides whether the user is in the experiment at all, so changing ``traffic`` never moves an included user to
another arm. Arms own consecutive ranges of the first bucket, in their config order, sized by their shares.

:func:`resolve` is what the API calls per request: the rail's experiment (if any) and the decisions in force
(:class:`Overrides`, read from the serving Redis by the API's cache, never per request) give the variant to
serve and what to log.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from skyrec.experiments.config import ExperimentConfig

_SCALE = float(2**64)


def bucket(salt: str, user_id: str) -> float:
    """Uniform in [0, 1) from (salt, user_id)."""
    digest = hashlib.blake2b(f"{salt}\x00{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def traffic_bucket(salt: str, user_id: str) -> float:
    return bucket(f"{salt}\x00traffic", user_id)


@dataclass(frozen=True, slots=True)
class Assignment:
    """What to serve for one (rail, user) and what to log.

    ``experiment``/``arm`` name the experiment governing the rail and the arm whose variant is served (the
    default arm, or the promoted one, when the user is not in the experiment); both None when the rail has no
    experiment. ``in_experiment`` is True only for users the experiment is measuring: the response and the
    events carry ``logged_experiment``/``logged_arm``, which are None otherwise.
    """

    experiment: str | None
    arm: str | None
    variant: str
    in_experiment: bool

    @property
    def logged_experiment(self) -> str | None:
        return self.experiment if self.in_experiment else None

    @property
    def logged_arm(self) -> str | None:
        return self.arm if self.in_experiment else None


@dataclass(frozen=True)
class Overrides:
    """The decisions in force (``skyrec experiment stop|promote``): stopped experiments, and promoted ones with
    their arm and the sequence number of the promotion (the latest promotion on a rail wins)."""

    stopped: frozenset[str] = frozenset()
    promoted: Mapping[str, tuple[str, int]] = field(default_factory=dict)

    @classmethod
    def from_state(cls, state: Mapping[str, Mapping[str, object]]) -> Overrides:
        """From the ``experiments`` mapping of the overrides record (:mod:`skyrec.experiments.control`)."""
        stopped, promoted = set(), {}
        for name, entry in state.items():
            action = entry.get("action")
            if action == "stop":
                stopped.add(name)
            elif action == "promote":
                promoted[name] = (str(entry.get("arm")), int(entry.get("seq") or 0))  # type: ignore[call-overload]
        return cls(frozenset(stopped), promoted)


NO_OVERRIDES = Overrides()


def assign(experiment: ExperimentConfig, name: str, user_id: str, now: dt.datetime, *,
           stopped: bool = False) -> Assignment:
    """The user's arm in one experiment: in it iff live at ``now``, not stopped, and inside ``traffic``."""
    if stopped or not (experiment.start <= now < experiment.end) \
            or traffic_bucket(experiment.salt, user_id) >= experiment.traffic:
        return Assignment(name, experiment.default_arm, experiment.arms[experiment.default_arm].variant, False)
    b = bucket(experiment.salt, user_id)
    bounds = experiment.bounds
    for upper, arm, variant in bounds:
        if b < upper:
            return Assignment(name, arm, variant, True)
    _, arm, variant = bounds[-1]  # shares summing to 1 - 1e-12: the last sliver belongs to the last arm
    return Assignment(name, arm, variant, True)


def resolve(experiments: Mapping[str, ExperimentConfig], overrides: Overrides, rail: str, user_id: str,
            now: dt.datetime) -> Assignment:
    """The variant to serve for ``rail`` to ``user_id`` at ``now`` (aware UTC), and what to log.

    1. a live experiment on the rail that is neither stopped nor promoted assigns the user (:func:`assign`);
    2. else the latest promotion on the rail serves its arm's variant to everyone;
    3. else the rail's experiment closest in time (the latest started, else the next to start) serves its
       default arm (outside its dates, or stopped);
    4. a rail with no experiment serves itself.
    """
    promoted: tuple[int, str, str] | None = None
    fallback: tuple[str, ExperimentConfig] | None = None
    for name, exp in experiments.items():
        if exp.rail != rail:
            continue
        promotion = overrides.promoted.get(name)
        if promotion is not None:
            if promoted is None or promotion[1] > promoted[0]:
                promoted = (promotion[1], name, promotion[0])
            continue
        stopped = name in overrides.stopped
        if not stopped and exp.start <= now < exp.end:
            return assign(exp, name, user_id, now)
        if fallback is None or _closer(exp, fallback[1], now):
            fallback = (name, exp)
    if promoted is not None:
        _, name, arm = promoted
        spec = experiments[name].arms.get(arm)
        if spec is not None:  # an arm removed from the config since: the promotion no longer applies
            return Assignment(name, arm, spec.variant, False)
    if fallback is not None:
        name, exp = fallback
        return Assignment(name, exp.default_arm, exp.arms[exp.default_arm].variant, False)
    return Assignment(None, None, rail, False)


def _closer(a: ExperimentConfig, b: ExperimentConfig, now: dt.datetime) -> bool:
    """Whether ``a`` governs the rail's default rather than ``b``: started ones first, the latest start wins;
    among those not started yet, the earliest start."""
    a_started, b_started = a.start <= now, b.start <= now
    if a_started != b_started:
        return a_started
    return a.start > b.start if a_started else a.start < b.start


def mint_impression_id(assignment: Assignment) -> str:
    """``{experiment or -}.{arm or -}.{32 hex}``: unique per answer, naming what the answer was measured as."""
    return f"{assignment.logged_experiment or '-'}.{assignment.logged_arm or '-'}.{os.urandom(16).hex()}"


def response_fields(assignment: Assignment) -> dict[str, str | None]:
    """The fields a recommendations answer carries: ``experiment``, ``arm`` (null outside an experiment) and a
    fresh ``impression_id``."""
    return {"experiment": assignment.logged_experiment, "arm": assignment.logged_arm,
            "impression_id": mint_impression_id(assignment)}
