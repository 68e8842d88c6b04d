"""The training dataset's id depends on the split settings the split uses, and nothing else of the split.

Before, every split setting and ``holdout_days`` counted under every split kind: changing ``holdout_days``
under the (default) per-user split re-created every dataset, and the gate's protocol changed with it. A
run that committed its dataset under that older id keeps reading it: no rebuild, and a re-run of that date
is still a no-op."""

from __future__ import annotations

import pytest
from _train_helpers import FAST, run_job

from skyrec.config import TrainingConfig, canonical_dataset_definition, used_split_settings
from skyrec.jobs.base import EXIT_OK


def _id(**training) -> str:
    return TrainingConfig(**training).dataset_id("als")


@pytest.mark.parametrize(("base", "unused"), [
    ({"split": {"kind": "per_user"}}, {"holdout_days": 30}),
    ({"split": {"kind": "per_user", "test_items": 2}}, {"split": {"kind": "per_user", "test_items": 2,
                                                                  "test_fraction": 0.5}}),
    ({"split": {"kind": "global"}}, {"split": {"kind": "global", "test_fraction": 0.5, "test_items": 3,
                                               "min_train_items": 4}}),
])
def test_a_setting_the_split_does_not_use_changes_no_dataset_id(base, unused) -> None:
    assert _id(**base) == _id(**{**base, **unused})


@pytest.mark.parametrize(("base", "used"), [
    ({"split": {"kind": "per_user"}}, {"split": {"kind": "per_user", "test_fraction": 0.3}}),
    ({"split": {"kind": "per_user"}}, {"split": {"kind": "per_user", "min_train_items": 2}}),
    ({"split": {"kind": "per_user"}}, {"split": {"kind": "per_user", "test_items": 2}}),
    ({"split": {"kind": "global"}}, {"split": {"kind": "global"}, "holdout_days": 30}),
    ({"split": {"kind": "global"}}, {"split": {"kind": "per_user"}}),
    ({}, {"recency_half_life_days": 7}),
])
def test_a_setting_the_split_uses_changes_the_dataset_id(base, used) -> None:
    assert _id(**base) != _id(**{**base, **used})


def test_the_recorded_definition_holds_only_what_the_split_uses() -> None:
    per_user = TrainingConfig(holdout_days=30).dataset_definition("als")
    assert "holdout_days" not in per_user and "holdout_days" not in per_user["split"]
    assert per_user["split"] == {"kind": "per_user", "test_fraction": 0.2, "test_items": None, "min_train_items": 1}
    assert TrainingConfig(split={"kind": "global"}, holdout_days=30).dataset_definition("als")["split"] == {
        "kind": "global", "holdout_days": 30}
    # the form recorded before (holdout_days beside the split, every split setting) reads as today's
    old = {"weighting": {"play": 1.0}, "played_fraction_weight": 0.5, "recency_half_life_days": 30,
           "holdout_days": 7, "split": {"kind": "per_user", "test_fraction": 0.2, "test_items": None,
                                        "min_train_items": 1}}
    assert canonical_dataset_definition(old)["split"] == per_user["split"]
    assert "holdout_days" not in canonical_dataset_definition(old)
    # what a dataset recorded about its split beyond the settings is kept
    assert used_split_settings({"kind": "per_user", "test_items": 2, "test_fraction": 0.2, "users_tested": 9}) == {
        "kind": "per_user", "test_items": 2, "users_tested": 9}


@pytest.mark.parametrize("split", [{}, {"test_items": 3}])
def test_a_run_committed_under_the_earlier_id_is_read_not_rebuilt_and_its_rerun_is_a_no_op(
        seeded, config_factory, monkeypatch, split) -> None:
    """The chain ran before this change: its dataset sits under the earlier id, and its model and evaluation
    recorded the earlier forms of the definition and the protocol (with ``test_items``, the unused
    ``test_fraction`` too). Re-running the date: every step is a no-op and reads that dataset (none is built
    under today's id)."""
    from skyrec.jobs import evaluate

    _, lake, _ = seeded
    config = config_factory({**FAST, "training": {**FAST["training"], "split": split}})
    legacy = config.training.legacy_dataset_id("als")
    assert legacy != config.training.dataset_id("als")
    old_definition = {"weighting": dict(sorted(config.training.weighting.items())),
                      "played_fraction_weight": config.training.played_fraction_weight,
                      "recency_half_life_days": config.training.recency_half_life_days,
                      "holdout_days": config.training.holdout_days, "split": config.training.split.model_dump()}
    old_protocol = evaluate.protocol

    def protocol_then(cfg, split):  # the split as it was recorded then: every per-user setting, used or not
        out = old_protocol(cfg, split)
        return {**out, "split": {k: v for k, v in (split or {}).items()
                                 if k not in ("users_tested", "users_cut_in_a_tie", "cutoff")}}

    with monkeypatch.context() as then:  # the earlier version's ids and recorded forms
        then.setattr(TrainingConfig, "dataset_id", TrainingConfig.legacy_dataset_id)
        then.setattr(TrainingConfig, "dataset_definition", lambda self, model: dict(old_definition))
        then.setattr(evaluate, "protocol", protocol_then)
        for job in ("create_dataset", "train", "evaluate"):
            code, payload = run_job(config, job)
            assert code == EXIT_OK, (job, payload.get("error"))
    built = payload["summary"]["outputs"]

    for job in ("create_dataset", "train", "evaluate"):
        code, payload = run_job(config, job)
        assert code == EXIT_OK, (job, payload.get("error"))
        assert payload["summary"].get("note") == "already committed", (job, payload["summary"])
    assert payload["summary"]["outputs"] == built
    assert lake.manifest(f"training/dataset/{config.training.dataset_id('als')}/run=" +
                         built[0].rsplit("run=", 1)[1]) is None  # nothing built under today's id
