"""docs/deploy.md is checked against the code: no setting is documented that the code does not read.

- a config key (`section.key…`) or a ``SKYREC__SECTION__KEY`` variable is a field of the configuration
  model, and the code reads that field (an attribute access ``x.field`` in the code of ``src/skyrec``, not
  in a comment or docstring);
- a plain ``SKYREC_…`` variable is named in the code under ``src/`` or ``dags/``;
- an ``AIRFLOW__SECTION__KEY`` variable is printed by ``skyrec airflow-env`` or is an option of Airflow's own
  configuration (core and installed providers);
- the ``skyrec airflow-env --env prod`` block is exactly what the command prints;
- every ``skyrec COMMAND --option`` the doc shows exists.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from skyrec.config import Config, load_config

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "deploy.md"
TEXT = DOC.read_text()
SOURCES = [p for d in ("src", "dags") for p in (ROOT / d).rglob("*.py")]
CODE = "\n".join(p.read_text() for p in SOURCES)

def _attributes_read(root: Path) -> set[str]:
    """Every attribute name the code under ``root`` accesses (``x.name``): code, not comments or docstrings."""
    names: set[str] = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Attribute):
                names.add(node.attr)
    return names


ATTRIBUTES_READ = _attributes_read(ROOT / "src" / "skyrec")

AIRFLOW_VARS = sorted(set(re.findall(r"\bAIRFLOW__[A-Z0-9_]+\b", TEXT)))
SKYREC_NESTED = sorted(set(re.findall(r"\bSKYREC__[A-Z0-9_]+\b", TEXT)))
SKYREC_PLAIN = sorted(set(re.findall(r"\bSKYREC_(?!_)[A-Z0-9_]+\b", TEXT)))
# `jobs.backend`, `serve.host: 0.0.0.0`: a dotted lower-case key in backticks, optionally with a value
CONFIG_KEYS = sorted({m for m in re.findall(r"`([a-z_]+(?:\.[a-z0-9_]+)+)(?::[^`]*)?`", TEXT)
                      if not re.search(r"\.(json|yaml|md|py|log|whl)$", m)})


def _unwrap(annotation: Any) -> Any:
    """The model class inside ``X | None``; the annotation itself otherwise."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        models = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        return models[0] if models else annotation
    return annotation


def config_field(key: str) -> str:
    """Resolve a dotted key through the configuration model; returns the last model field it names.
    Keys may go on into a mapping (``jobs.deadlines_minutes.train``)."""
    model: Any = Config
    leaf = ""
    for part in key.split("."):
        if model is None:  # inside a dict-valued field: free-form keys
            return leaf
        fields = model.model_fields
        assert part in fields, f"docs/deploy.md names config key {key!r}: {part!r} is not a field of {model.__name__}"
        leaf = part
        annotation = _unwrap(fields[part].annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        elif typing.get_origin(annotation) is dict:
            model = None
        else:
            model = None
            assert part == key.split(".")[-1], f"{key!r}: {part!r} is a value, it has no sub-keys"
    return leaf


def assert_read(key: str, leaf: str) -> None:
    assert leaf in ATTRIBUTES_READ, (
        f"docs/deploy.md names {key!r}, but no code in src/skyrec reads the field {leaf!r}")


def test_the_doc_names_settings_at_all() -> None:
    """Guard against a parser that silently finds nothing (and so checks nothing)."""
    assert len(AIRFLOW_VARS) >= 10 and len(SKYREC_NESTED) >= 2 and len(SKYREC_PLAIN) >= 5 and len(CONFIG_KEYS) >= 20


@pytest.mark.parametrize("key", CONFIG_KEYS)
def test_config_key_is_a_field_the_code_reads(key: str) -> None:
    assert_read(key, config_field(key))


@pytest.mark.parametrize("var", SKYREC_NESTED)
def test_skyrec_override_variable_is_a_config_field_the_code_reads(var: str) -> None:
    key = ".".join(p.lower() for p in var[len("SKYREC__"):].split("__"))
    assert_read(var, config_field(key))
    # and the override really lands there
    value = {"SKYREC__PUBLISH__REDIS_URL": "redis://doc-check:1/0", "SKYREC__SERVE__REDIS_URL": "redis://doc-check:1/0",
             "SKYREC__ALERTS__WEBHOOK_URL": "http://doc-check/hook"}.get(var)
    if value is not None:
        cfg: Any = load_config("prod", root=ROOT, environ={var: value})
        for part in key.split("."):
            cfg = getattr(cfg, part)
        assert cfg == value


@pytest.mark.parametrize("var", SKYREC_PLAIN)
def test_plain_skyrec_variable_is_read_by_the_code(var: str) -> None:
    assert re.search(rf"[\"']{var}[\"']", CODE), f"docs/deploy.md names {var}, which no code under src/ or dags/ reads"


@pytest.fixture(scope="module")
def prod_airflow_env() -> dict[str, str]:
    from skyrec.airflow.runner import airflow_env

    return airflow_env(load_config("prod", root=ROOT, environ={}))


@pytest.fixture(scope="module")
def airflow_options(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Every option of Airflow's configuration, core and installed providers (in a clean process)."""
    code = ("import json; from airflow.configuration import conf; "
            "print('OPTIONS=' + json.dumps({s: sorted(v.get('options', {})) "
            "for s, v in conf.configuration_description.items()}))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["AIRFLOW_HOME"] = str(tmp_path_factory.mktemp("airflow-home"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("OPTIONS=")), None)
    assert line, proc.stdout + proc.stderr
    options = json.loads(line[len("OPTIONS="):])
    assert "sql_alchemy_conn" in options["database"]  # the description is the real one
    return options


@pytest.mark.parametrize("var", AIRFLOW_VARS)
def test_airflow_variable_is_printed_by_skyrec_or_an_airflow_option(var: str, prod_airflow_env: dict[str, str],
                                                                    airflow_options: dict[str, list[str]]) -> None:
    if var in prod_airflow_env:
        return
    m = re.fullmatch(r"AIRFLOW__([A-Z0-9_]+?)__([A-Z0-9_]+)", var)
    assert m, f"{var} is not of the form AIRFLOW__SECTION__KEY"
    section, option = m.group(1).lower(), m.group(2).lower()
    assert section in airflow_options, f"docs/deploy.md names {var}: Airflow has no [{section}] section"
    assert option in airflow_options[section], f"docs/deploy.md names {var}: Airflow has no option [{section}] {option}"


def test_airflow_env_block_is_what_the_command_prints(prod_airflow_env: dict[str, str]) -> None:
    block = re.search(r"`skyrec airflow-env --env prod` prints.*?\n```\n(.*?)```", TEXT, re.S)
    assert block, "docs/deploy.md: no airflow-env block"
    documented = {}
    for line in block.group(1).splitlines():
        m = re.fullmatch(r"export ([A-Z0-9_]+)=(.*)", line.strip())
        assert m, f"not an export line: {line!r}"
        documented[m.group(1)] = m.group(2).replace("<checkout>", str(ROOT))
    assert documented == prod_airflow_env


def test_skyrec_commands_and_options_in_the_doc_exist() -> None:
    import typer

    from skyrec.cli import app

    group: Any = typer.main.get_command(app)
    # `skyrec CMD …` in backticks, and `skyrec CMD …` lines of code blocks
    blocks = "\n".join(re.findall(r"^```[a-z]*\n(.*?)^```", TEXT, re.S | re.M))
    shown = re.findall(r"`skyrec ([a-z][a-z-]*)([^`]*)`", TEXT) + re.findall(r"^skyrec ([a-z][a-z-]*)(.*)$", blocks, re.M)
    assert len(shown) >= 5
    for name, rest in shown:
        assert name in group.commands, f"docs/deploy.md shows `skyrec {name}`, which is not a command"
        known = {opt for p in group.commands[name].params for opt in p.opts}
        for opt in re.findall(r"(?:^|\s)(--?[a-z][a-z-]*)", rest):
            assert opt in known, f"docs/deploy.md shows `skyrec {name} {opt}`, which that command does not accept"
