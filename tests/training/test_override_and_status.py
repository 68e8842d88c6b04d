"""What people read about a held model and about one published by an override: publish_model's refusal,
the published pointer's verdict, ``skyrec status`` and the lines after a ``train_model`` run."""

from __future__ import annotations

import pytest
from _train_helpers import FAST, run_job, train_all
from typer.testing import CliRunner

from skyrec.jobs.base import EXIT_GATE, EXIT_OK
from skyrec.models.artefact import published_model_pointer
from skyrec.status import collect, train_run_lines

HELD = "v1.20260301T020000"


@pytest.fixture
def held(seeded, config_factory):
    """A published model (hour 1), then a model of hour 2 held: insufficient evidence under policy 'hold'
    (same snapshot, no refit: nothing can be compared with the published model). Intervals at 90%."""
    from skyrec.redis_local import free_port

    _, lake, _ = seeded
    config = config_factory({**FAST, "training": {"holdout_days": 3, "confidence": 0.9,
                                                  "quality_gate": {"refit_published": False}},
                             "publish": {"redis_url": f"redis://127.0.0.1:{free_port()}/0"}},  # none: status says so
                            rails="als")
    assert all(c == EXIT_OK for c, _ in train_all(config, hour=1).values())
    train_all(config, hour=2, upto="train")
    code, payload = run_job(config, "evaluate", hour=2)
    assert code == EXIT_GATE and "policy 'hold': not published" in payload["error"], payload
    return config, lake


def _status_text(config, monkeypatch) -> str:
    import skyrec.cli

    monkeypatch.setattr(skyrec.cli, "load_config", lambda env=None, **_: config)
    out = CliRunner().invoke(skyrec.cli.app, ["status"], env={"COLUMNS": "400"})
    assert out.exit_code == 0, out.output
    return " ".join(out.output.split())


def test_publish_model_refusal_says_where_the_override_goes(held) -> None:
    """Not "(override for one run with --override quality)" to someone who has just passed it: the override
    belongs on the evaluate step, which re-decides and records the new verdict."""
    config, _ = held
    code, payload = run_job(config, "publish_model", hour=2, overrides=("quality",))
    assert code == EXIT_GATE
    error = payload["error"]
    assert "--override quality does not apply to publish_model" in error
    assert ("skyrec job evaluate --param model=als --logical-date 2026-03-01T02:00:00+00:00 --override quality; "
            "then run publish_model again") in error
    assert "override for one run with --override quality" not in error
    code, payload = run_job(config, "publish_model", hour=2)
    assert code == EXIT_GATE and "does not apply" not in payload["error"]
    assert "skyrec job evaluate --param model=als" in payload["error"]


def test_status_shows_the_published_evaluation_its_confidence_and_a_newer_held_one(held, monkeypatch) -> None:
    config, lake = held
    row = next(r for r in collect(config)["models"] if r["model"] == "als")
    assert row["model_version"] == "v1.20260301T010000" and row["confidence"] == pytest.approx(0.9)
    assert row["overridden"] is False
    held_row = row["held"]
    assert held_row is not None and held_row["model_version"] == HELD and held_row["verdict"] == "held"
    assert "policy 'hold': not published" in held_row["gate"] and held_row["users"]
    text = _status_text(config, monkeypatch)
    assert "models published in the lake (the serving Redis could not be read): their evaluation (90% intervals)" \
        in text and "95%" not in text
    assert f"als v1: newest evaluation {HELD}" in text and "HELD, not published" in text
    rails = sum(1 for v in config.variants.values() if v.model == "als")
    assert rails > 1 and f"all {rails}" in text  # one group: a count, not every rail's name (80 columns)


def test_a_model_published_by_an_override_says_so_and_keeps_the_verdict(held, monkeypatch) -> None:
    """Not "policy 'hold': not published" for the model that is published."""
    config, lake = held
    assert run_job(config, "evaluate", hour=2, overrides=("quality",))[0] == EXIT_OK
    assert run_job(config, "publish_model", hour=2)[0] == EXIT_OK
    ptr = lake.read_pointer(published_model_pointer("als", "v1"))
    gate = ptr["evaluation"]["gate"]
    assert ptr["model_version"] == HELD and gate["overridden"] is True and gate["passed"] is False
    assert gate["message"].startswith("published by an override of the failed quality gate (re-decided by evaluate-")
    assert "; the gate's verdict was: insufficient evidence" in gate["message"]
    assert "policy 'hold': not published" in gate["verdict"] and not gate["verdict"].startswith("published")
    assert ptr["evaluation"]["confidence"] == pytest.approx(0.9)

    row = next(r for r in collect(config)["models"] if r["model"] == "als")
    assert row["overridden"] is True and row["held"] is None and row["gate"] == gate["message"]
    text = _status_text(config, monkeypatch)
    assert "published by an override of the failed quality gate" in text and "HELD" not in text
    lines = train_run_lines(config, "20260301T020000")
    assert any(line.startswith("  gate failed, overridden: insufficient evidence") for line in lines), lines
    assert f"  published: {HELD}" in lines


def test_status_reads_at_80_columns(held, monkeypatch) -> None:
    """A person's terminal: every line fits, the models are short blocks of prose (not a table whose gate
    column folds one word a line), and a dataset with nothing for any rail is one row, not six."""
    import skyrec.cli

    config, _ = held
    monkeypatch.setattr(skyrec.cli, "load_config", lambda env=None, **_: config)
    out = CliRunner().invoke(skyrec.cli.app, ["status"], env={"COLUMNS": "80"})
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    start = next(i for i, line in enumerate(lines) if line.startswith("models published in the lake"))
    end = next(i for i, line in enumerate(lines) if line.startswith("warning: serving Redis"))
    block = lines[start:end]
    assert len(block) <= 15, "\n".join(block)
    assert sum(1 for line in block if len(line.split()) < 3) <= 2, "\n".join(block)  # "report:", its path
    assert any(line.strip().startswith("gate: ndcg_at_k") for line in block)
    assert any(line.strip().startswith("held: als v1: newest evaluation") for line in block)
    table = lines[:start]
    assert sum(1 for line in table if line.split()[:1] == ["predictions"]) == 1
    at = next(i for i, line in enumerate(table) if line.split()[:1] == ["predictions"])
    assert table[at + 1].split() == ["6", "rails"]  # at 80 columns the scope goes under the dataset's name
    wide = CliRunner().invoke(skyrec.cli.app, ["status"], env={"COLUMNS": "120"}).output.splitlines()
    assert any(line.split()[:3] == ["predictions", "6", "rails"] for line in wide)  # wider: a column
