"""Decisions on experiments: stop, promote, revert: recorded, reversible, never a config edit on a server.

The record lives in the serving Redis under ``{prefix}:experiments:overrides`` (JSON)::

    {"version": 1, "seq": 3,
     "experiments": {"rfy_knn_vs_ease": {"action": "promote", "arm": "treatment", "seq": 3, "by": "ana@host",
                                         "at": "2026-12-30T09:00:00Z", "reason": "..."}},
     "history": [{"seq": 1, "experiment": "...", "action": "stop", "arm": null, "by": "...", "at": "...",
                  "reason": "...", "before": null, "after": {...}, "reverted_by": 2}, ...]}

``experiments`` holds the decision in force per experiment (absent: none); ``history`` every change, newest last,
each with the state before and after it, so ``revert`` restores the state before the latest change not yet
reverted. Changes are compare-and-set (WATCH/MULTI): two operators never overwrite each other. Every change is
also appended to ``{state}/experiments/decisions.jsonl`` (the audit copy, never truncated; Redis keeps the last
HISTORY_KEPT changes).

The API reads the record on the same cadence as its publication pointers (``serve.pointer_cache_seconds``), in
the background: no request waits for it (:mod:`skyrec.experiments.runtime`).
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import socket
from collections import Counter
from pathlib import Path
from typing import Any

from skyrec.config import Config
from skyrec.experiments.assign import Overrides, assign, resolve
from skyrec.experiments.events import utc_text
from skyrec.experiments.stream import GROUP, backlog_from, stream_key
from skyrec.publish.keys import Keys

VERSION = 1
HISTORY_KEPT = 1000
ACTIONS = ("stop", "promote", "revert")


class DecisionError(ValueError):
    """A decision that cannot be taken as asked (the message says why and what to do)."""


def overrides_key(prefix: str) -> str:
    return f"{Keys(prefix).p}:experiments:overrides"


def empty_record() -> dict[str, Any]:
    return {"version": VERSION, "seq": 0, "experiments": {}, "history": []}


def parse_record(raw: bytes | str | None) -> dict[str, Any]:
    """The record from its JSON (an absent key is the empty record); ValueError when unreadable."""
    if raw is None:
        return empty_record()
    record = json.loads(raw)
    if not isinstance(record, dict) or record.get("version") != VERSION \
            or not isinstance(record.get("experiments"), dict) or not isinstance(record.get("history"), list):
        raise ValueError(f"not an overrides record of version {VERSION}")
    return record


def overrides_of(record: dict[str, Any]) -> Overrides:
    return Overrides.from_state(record["experiments"])


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _experiment(config: Config, name: str) -> Any:
    try:
        return config.experiments[name]
    except KeyError:
        known = ", ".join(sorted(config.experiments)) or "none configured"
        raise DecisionError(f"experiments.{name}: no such experiment in the config (known: {known})") from None


def _change(record: dict[str, Any], config: Config, name: str, action: str, arm: str | None, by: str,
            reason: str | None, at: str) -> dict[str, Any]:
    """Apply one decision to ``record`` in place; returns the history entry."""
    state: dict[str, Any] = record["experiments"]
    before = state.get(name)
    seq = int(record.get("seq", 0)) + 1
    if action == "stop":
        exp = _experiment(config, name)
        if before and before["action"] == "stop":
            raise DecisionError(f"{name} is already stopped (since {before['at']}, by {before['by']})")
        if before and before["action"] == "promote":
            raise DecisionError(f"{name} is promoted (arm {before['arm']}): it is over already; "
                                f"`skyrec experiment revert {name}` undoes the promotion")
        after: dict[str, Any] | None = {"action": "stop", "arm": exp.default_arm}
    elif action == "promote":
        exp = _experiment(config, name)
        if arm not in exp.arms:
            raise DecisionError(f"{name}: no arm {arm!r} (arms: {', '.join(exp.arms)})")
        if before and before["action"] == "promote" and before["arm"] == arm:
            raise DecisionError(f"{name}: arm {arm} is promoted already (since {before['at']}, by {before['by']})")
        after = {"action": "promote", "arm": arm, "variant": exp.arms[arm].variant}
    elif action == "revert":
        target = next((h for h in reversed(record["history"]) if h["experiment"] == name
                       and h["action"] in ("stop", "promote") and not h.get("reverted_by")), None)
        if target is None:
            raise DecisionError(f"{name}: nothing to revert (no decision recorded, or all reverted)")
        if target.get("after") != _bare(before):
            raise DecisionError(f"{name}: the decision in force is not the one recorded last; inspect the "
                                f"record with `skyrec experiment status {name}`")
        target["reverted_by"] = seq
        after = target.get("before")
        arm = target.get("arm")
    else:
        raise DecisionError(f"unknown action {action!r} (known: {', '.join(ACTIONS)})")
    if after is None:
        state.pop(name, None)
    else:
        state[name] = {**after, "seq": seq, "by": by, "at": at, "reason": reason}
    entry = {"seq": seq, "experiment": name, "action": action, "arm": arm, "by": by, "at": at, "reason": reason,
             "before": _bare(before), "after": _bare(state.get(name))}
    record["seq"] = seq
    record["history"] = [*record["history"], entry][-HISTORY_KEPT:]
    return entry


def _bare(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    """A state entry without its bookkeeping (what a revert restores and compares)."""
    if entry is None:
        return None
    return {k: v for k, v in entry.items() if k not in ("seq", "by", "at", "reason")}


def decide(config: Config, client: Any, name: str, action: str, arm: str | None = None, *, by: str | None = None,
           reason: str | None = None, now: dt.datetime | None = None) -> dict[str, Any]:
    """Record one decision in the serving Redis (compare-and-set) and in the audit file; returns the entry."""
    import redis

    key = overrides_key(config.publish.key_prefix)
    by = by or _who()
    at = utc_text(now or dt.datetime.now(dt.UTC))
    for _ in range(20):
        with client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)
                try:
                    record = parse_record(pipe.get(key))
                except ValueError as exc:
                    raise DecisionError(f"{key}: unreadable overrides record ({exc}); fix or delete it "
                                        f"(the audit copy is in {audit_path(config)})") from None
                entry = _change(record, config, name, action, arm, by, reason, at)
                pipe.multi()
                pipe.set(key, json.dumps(record, separators=(",", ":")))
                pipe.execute()
            except redis.WatchError:
                continue  # someone else changed it in between: read again
        _audit(config, {**entry, "key": key})
        return entry
    raise DecisionError(f"{key}: changed by others 20 times in a row; try again")


def audit_path(config: Config) -> Path:
    return Path(config.state_dir) / "experiments" / "decisions.jsonl"


def _audit(config: Config, entry: dict[str, Any]) -> None:
    path = audit_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read(config: Config, client: Any) -> dict[str, Any]:
    return parse_record(client.get(overrides_key(config.publish.key_prefix)))


def status(config: Config, client: Any | None, name: str, *, sample: int = 10_000,
           now: dt.datetime | None = None) -> dict[str, Any]:
    """The experiment's config, the decision in force, its recent decisions, and assignment counts over a sample
    of ``sample`` synthetic user ids: as served now (config + decisions) and as configured while live."""
    exp = _experiment(config, name)
    now = now or dt.datetime.now(dt.UTC)
    record = read(config, client) if client is not None else empty_record()
    overrides = overrides_of(record)
    ids = [f"status-sample-{i}" for i in range(sample)]
    served: Counter[str] = Counter()
    measured: Counter[str] = Counter()
    for uid in ids:
        a = resolve(config.experiments, overrides, exp.rail, uid, now)
        served[f"{a.arm or '-'} ({a.variant})" + ("" if a.in_experiment else " not in experiment")] += 1
        live = assign(exp, name, uid, exp.start)  # the split the experiment's dates would give
        measured[live.arm if live.arm is not None and live.in_experiment else "(outside traffic)"] += 1
    if now < exp.start:
        phase = "scheduled"
    elif now >= exp.end:
        phase = "ended"
    else:
        phase = "live"
    out: dict[str, Any] = {
        "experiment": name, "phase": phase, "now": utc_text(now),
        "config": json.loads(exp.model_dump_json()),
        "decision": record["experiments"].get(name),
        "history": [h for h in record["history"] if h["experiment"] == name][-10:],
        "sample": sample,
        "served_now": dict(sorted(served.items())),
        "split_while_live": {arm: measured.get(arm, 0) for arm in [*exp.arms, "(outside traffic)"]},
        "expected_while_live": {arm: round(sample * exp.traffic * a.share, 1) for arm, a in exp.arms.items()},
    }
    if client is not None:
        key = stream_key(config.publish.key_prefix)
        length = int(client.xlen(key))
        try:
            groups = client.xinfo_groups(key) if length else None
        except Exception:  # noqa: BLE001 - a missing stream between the two calls: no group
            groups = None
        out["stream"] = {"key": key, "length": length, "backlog": backlog_from(length, groups), "group": GROUP}
    return out

