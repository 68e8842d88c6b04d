"""The README's shell examples run as written against the demo's data, and the docs put each port where the
configuration does.

The "Two commands" section of README.md is read as it is: every ``curl …`` and ``skyrec …`` line of its
``bash`` blocks runs in a shell from the repository root after ``python -m skyrec demo --keep-serving`` (what
``make demo KEEP_SERVING=1`` runs) built the demo's data in a temporary home. The one change made to a
command is the API's address: the test's API listens on a free port instead of ``serve.port`` (8080), which
may be taken on the machine running the tests. A ``json`` block right after a command is the answer the
README shows: the real answer must have the same shape (same keys, types and list lengths) and the same
values where they do not depend on the run (user, rail, source, origin of each item, paging, errors).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from skyrec.config import load_config
from skyrec.redis_local import free_port

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
DEFAULT_API = "http://127.0.0.1:8080"

# Values that do not depend on the run: the answer must show exactly what the README shows.
EXACT = {"user_id", "variant", "source", "origin", "offset", "limit", "next_offset", "padded", "stale", "error",
         "message"}
# Values that differ per run but have a fixed form (the README's value must have it too).
FORMS = {"model_version": r"v1\.\d{8}T\d{6}", "publication": r"v1\.\d{8}T\d{6}-[0-9a-f]{8}",
         "request_id": r"[0-9a-f]{32}", "id": r"p\d{7}"}
# Lists whose length depends on the data (an item's genres); the items of an answer are not among them.
ANY_LENGTH = {"genres"}


@dataclass
class Example:
    command: str
    shown: str | None  # the json block right after the command's block, if any
    line: int


def section(text: str, title: str) -> tuple[str, int]:
    start = text.index(f"\n## {title}\n")
    end = text.index("\n## ", start + 1)
    return text[start:end], text[:start].count("\n") + 1


def examples() -> list[Example]:
    body, first_line = section(README, "Two commands")
    blocks = [(m.group(1), m.group(2), first_line + body[: m.start()].count("\n"))
              for m in re.finditer(r"^```(\w*)\n(.*?)^```$", body, re.S | re.M)]
    out = []
    for i, (lang, code, line) in enumerate(blocks):
        if lang != "bash":
            continue
        following = blocks[i + 1] if i + 1 < len(blocks) else None
        commands = [c.split("  #")[0].strip() for c in code.splitlines()
                    if re.match(r"(curl|(\.venv/bin/)?skyrec) ", c.strip())]
        for n, command in enumerate(commands):
            shown = following[1] if following and following[0] == "json" and n == len(commands) - 1 else None
            out.append(Example(command, shown, line))
    return out


EXAMPLES = examples()


def test_the_section_has_examples_with_answers():
    assert len(EXAMPLES) >= 4, [e.command for e in EXAMPLES]
    assert sum(e.shown is not None for e in EXAMPLES) >= 3
    assert any(e.command.split()[0].endswith("skyrec") and e.command.split()[1] == "status" for e in EXAMPLES)
    for e in EXAMPLES:
        if e.shown is not None:
            json.loads(e.shown)  # what the README shows is JSON a reader can paste
        if e.command.startswith("curl"):
            assert DEFAULT_API + "/" in e.command, f"README line {e.line}: not the default API address"
    assert load_config("local", root=ROOT).serve.port == 8080


def same_shape(shown: Any, real: Any, where: str = "") -> None:
    """``real`` has the shape of ``shown`` and the same values where they do not depend on the run."""
    key = where.rsplit(".", 1)[-1].split("[")[0]
    if isinstance(shown, dict):
        assert isinstance(real, dict), f"{where}: {real!r} is not an object"
        assert sorted(real) == sorted(shown), f"{where}: keys {sorted(real)} != README's {sorted(shown)}"
        for k in shown:
            same_shape(shown[k], real[k], f"{where}.{k}")
    elif isinstance(shown, list):
        assert isinstance(real, list), f"{where}: {real!r} is not a list"
        if key in ANY_LENGTH:
            assert all(isinstance(x, str) for x in real), f"{where}: {real!r}"
            return
        assert len(real) == len(shown), f"{where}: {len(real)} entries, README shows {len(shown)}"
        for i, (s, r) in enumerate(zip(shown, real, strict=True)):
            same_shape(s, r, f"{where}[{i}]")
    elif key in EXACT:
        assert real == shown, f"{where}: {real!r}, README shows {shown!r}"
    elif key in FORMS:
        assert re.fullmatch(FORMS[key], shown), f"{where}: README's {shown!r} is not of the form {FORMS[key]}"
        assert re.fullmatch(FORMS[key], real), f"{where}: {real!r} is not of the form {FORMS[key]}"
    elif shown is None or isinstance(shown, bool):
        assert real is shown, f"{where}: {real!r}, README shows {shown!r}"
    elif isinstance(shown, int | float):
        assert isinstance(real, int | float) and not isinstance(real, bool), f"{where}: {real!r} is not a number"
    else:
        assert isinstance(real, type(shown)), f"{where}: {real!r} is not a {type(shown).__name__}"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """The demo's data and API, built by the code `make demo KEEP_SERVING=1` runs, in a temporary home."""
    recipe = re.search(r"^demo:.*\n\t(.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert recipe and recipe.group(1) == "$(PY) -m skyrec demo $(if $(KEEP_SERVING),--keep-serving,)"
    home = tmp_path_factory.mktemp("demo")
    redis_url = f"redis://127.0.0.1:{free_port()}/0"
    api_port = free_port()
    env = {**os.environ, "SKYREC_HOME": str(home), "SKYREC_PROJECT_ROOT": str(ROOT), "SKYREC_ENV": "local",
           "SKYREC__PUBLISH__REDIS_URL": redis_url, "SKYREC__SERVE__REDIS_URL": redis_url,
           "SKYREC__SERVE__PORT": str(api_port), "SKYREC__PUBLISH__SCRATCH_REDIS_PORT": str(free_port()),
           "SKYREC__ALERTS__WEBHOOK_URL": "", "COLUMNS": "200",
           "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = home / "demo.log"
    t0 = time.monotonic()
    try:
        with log.open("wb") as out:
            done = subprocess.run([sys.executable, "-m", "skyrec", "demo", "--keep-serving"], cwd=ROOT, env=env,
                                  stdout=out, stderr=subprocess.STDOUT, timeout=600)
        print(f"demo built in {time.monotonic() - t0:.0f} s (load average {os.getloadavg()[0]:.1f})")
        assert done.returncode == 0, log.read_text()[-3000:]
        yield f"http://127.0.0.1:{api_port}", env
    finally:
        subprocess.run([sys.executable, "-m", "skyrec", "stop"], cwd=ROOT, env=env, capture_output=True, timeout=60)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: " ".join(e.command.split()[:2])[:60])
def test_readme_example_runs_as_written(example: Example, demo: tuple[str, dict[str, str]]) -> None:
    base, env = demo
    command = example.command.replace(DEFAULT_API, base)
    done = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"README line {example.line}: {example.command}\n{done.stderr[-2000:]}"
    if example.shown is not None:
        same_shape(json.loads(example.shown), json.loads(done.stdout))
    if command.startswith("curl") and "/v1/recommendations/" in command and example.shown is not None:
        answer = json.loads(done.stdout)
        if "items" in answer:  # one list, one scale: the scored items are in order
            scores = [i["score"] for i in answer["items"] if i["score"] is not None]
            assert scores == sorted(scores, reverse=True)
    if example.command.split()[1:2] == ["status"]:
        ready = httpx.get(base + "/readyz").json()
        assert ready["status"] == "ready"
        for variant, publication in ready["variants"].items():  # every rail, with the publication served
            assert re.search(rf"{variant}\s+{re.escape(publication)}\s", done.stdout), done.stdout[-3000:]


def test_the_readme_user_listens_whatever_the_hour_the_demo_runs(tmp_path):
    """The demo's data end an hour before it runs, and the generator's hourly volume follows the clock
    (a diurnal curve), so which sample users played anything depends on the hour: the README's example
    user must be a regular listener at any hour, not one who happened to play at the hour it was written."""
    import datetime as dt

    import pyarrow.parquet as pq

    from skyrec.data.generate import generate
    from skyrec.demo import DEMO_SCALE

    users = set(re.findall(r"u\d{8}", section(README, "Two commands")[0])) - {"u00000000", "u00001999"}
    assert users, "the README names no sample user"
    for hour in (3, 15):  # two phases of the day
        home = tmp_path / f"h{hour}"
        config = load_config("local", environ={"SKYREC_HOME": str(home)})
        generate(config, end=dt.datetime(2026, 11, 30, hour, tzinfo=dt.UTC).isoformat(), progress=False,
                 metadata=False, **DEMO_SCALE)  # type: ignore[arg-type]
        plays = dict.fromkeys(users, 0)
        for f in (Path(config.source_url) / config.source.activity_prefix).rglob("*.parquet"):
            for user in pq.read_table(f, columns=["user_id"]).column("user_id").to_pylist():
                if user in plays:
                    plays[user] += 1
        assert all(n >= 20 for n in plays.values()), (hour, plays)


# ---- ports in the docs ---------------------------------------------------------------------------------


PORT_DOCS = [ROOT / "README.md", ROOT / "docs" / "airflow.md"]


def test_docs_put_each_port_where_the_config_does():
    """The Airflow UI is on ``airflow.api_port``, the skyrec API on ``serve.port``: never the other way."""
    config = load_config("local", root=ROOT)
    api_port, ui_port = config.serve.port, config.airflow.api_port
    redis_port = int(re.search(r":(\d+)/", config.publish.redis_url).group(1))  # type: ignore[union-attr]
    assert api_port != ui_port
    for doc in PORT_DOCS:
        text = doc.read_text()
        for flag, port in (("--api-port", ui_port), ("--serve-port", api_port), ("--redis-port", redis_port)):
            for m in re.finditer(rf"{flag} (\d+)", text):
                assert int(m.group(1)) == port, f"{doc.name}: {m.group(0)}, the default is {port}"
        for n, line in enumerate(text.splitlines(), 1):
            ports = {int(p) for p in re.findall(r"(?:127\.0\.0\.1|localhost):(\d{4,5})", line)}
            if re.search(r"\bUI\b", line) and ports:
                assert ports == {ui_port}, f"{doc.name}:{n}: the Airflow UI is on {ui_port}: {line.strip()}"
            if re.search(r"/v1/|/docs\b|/healthz|/readyz|skyrec API", line) and ports:
                assert ports == {api_port}, f"{doc.name}:{n}: the skyrec API is on {api_port}: {line.strip()}"
    airflow_doc = (ROOT / "docs" / "airflow.md").read_text()
    assert f"127.0.0.1:{ui_port}" in airflow_doc, "docs/airflow.md says where the Airflow UI is"
