"""docs/data.md, `skyrec schema` and the code's own definitions agree."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from skyrec.config import load_config
from skyrec.data.schemas import CONTRACTS, RAW_ACTIVITY, contract_markdown

ROOT = Path(__file__).resolve().parents[2]
DOCS = (ROOT / "docs" / "data.md").read_text()


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_the_docs_show_each_contract_as_the_code_defines_it(name: str) -> None:
    assert contract_markdown(CONTRACTS[name]) in DOCS, f"docs/data.md is out of date for {name!r}"
    assert f"skyrec schema {name}" in DOCS


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_the_schema_command_prints_the_code_definition(name: str) -> None:
    from skyrec.cli import app

    result = CliRunner().invoke(app, ["schema", name])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed == json.loads(json.dumps(CONTRACTS[name].describe()))
    if CONTRACTS[name].kind == "json":
        jsonschema.Draft202012Validator.check_schema(printed["json_schema"])
    else:
        assert [f["name"] for f in printed["fields"]] == CONTRACTS[name].arrow.names


def test_an_unknown_contract_is_a_clear_error() -> None:
    from skyrec.cli import app

    result = CliRunner().invoke(app, ["schema", "nope"])
    assert result.exit_code == 2 and "known: brand" in result.output


def _example(name: str) -> dict:
    return {f.name: f.example for f in CONTRACTS[name].fields if f.name != "deleted"}


@pytest.mark.parametrize("name", ["brand", "series", "episode", "availability"])
def test_required_fields_are_the_ones_the_catalogue_parser_requires(name: str) -> None:
    from skyrec.jobs.build_catalogue import _Invalid, _parse_record

    schema = CONTRACTS[name].json_schema()
    record = _example(name)
    jsonschema.validate(record, schema)
    _parse_record(record)  # the documented example is accepted by the parser
    for f in CONTRACTS[name].fields:
        if f.name not in record:
            continue
        partial = {k: v for k, v in copy.deepcopy(record).items() if k != f.name}
        schema_ok = jsonschema.Draft202012Validator(schema).is_valid(partial)
        try:
            _parse_record(partial)
            parser_ok = True
        except _Invalid:
            parser_ok = False
        if f.name == "parent":  # required to resolve to a brand: checked when the catalogue joins, not per record
            assert not schema_ok and parser_ok
            continue
        assert schema_ok == parser_ok == (not f.required), (name, f.name)


def test_activity_contract_matches_the_ingest_rules() -> None:
    from skyrec.data.activity import REQUIRED_COLUMNS

    fields = CONTRACTS["activity"].fields
    assert [f.name for f in fields] == RAW_ACTIVITY.names
    assert {f.name for f in fields if f.required} == set(REQUIRED_COLUMNS)


def test_every_generated_metadata_record_validates(tmp_path: Path) -> None:
    from skyrec.data.generate import generate

    cfg = load_config("local", root=ROOT, overrides={"source": {"url": str(tmp_path / "src")}},
                      environ={**os.environ, "SKYREC_HOME": str(tmp_path)})
    generate(cfg, users=20, items=40, days=1, events_per_user=2, seed=1, end="2026-03-01T00:00:00Z", bad_rate=0.0,
             progress=False)
    checked = 0
    for path in (tmp_path / "src" / "metadata").rglob("*.json"):
        rec = json.loads(path.read_text())
        jsonschema.validate(rec, CONTRACTS[rec["type"]].json_schema())
        checked += 1
    assert checked > 40
