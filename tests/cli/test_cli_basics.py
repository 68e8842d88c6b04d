"""`skyrec --version`, `skyrec config` (resolved and --raw) and typed settings, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from skyrec import __version__
from skyrec.config import ConfigError, load_config


def _skyrec(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "skyrec", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_version() -> None:
    out = _skyrec("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"skyrec {__version__}"


def test_config_prints_resolved_values_and_templates_with_raw(skyrec_home) -> None:
    resolved = json.loads(_skyrec("config", "storage", SKYREC_HOME=str(skyrec_home)).stdout)
    assert resolved["lake"] == f"{skyrec_home}/lake" and "{home}" not in json.dumps(resolved)
    raw = json.loads(_skyrec("config", "storage.lake", "--raw", SKYREC_HOME=str(skyrec_home)).stdout)
    assert raw == "{home}/lake"


def test_config_prints_search_spaces_as_they_are_written() -> None:
    """The print is config a user can copy: `{int: [16, 256], log: true}`, not the model's field names with
    a null for every kind the range is not."""
    spaces = json.loads(_skyrec("config", "training.search.spaces").stdout)
    assert spaces["als"]["factors"] == {"int": [16, 256], "log": True}
    assert spaces["als"]["regularization"] == {"float": [0.01, 100.0], "log": True}
    assert load_config("local").training.search.spaces["als"]["factors"].int_range == (16, 256)


@pytest.mark.parametrize("url, why", [
    ("notaurl", "scheme must be redis"), ("redis://", "no host"), ("redis://h:1/x", "database must be a number"),
    ("http://127.0.0.1:6379", "scheme must be redis"), ("redis://h:99999/0", "Redis URL"),
])
def test_redis_urls_are_validated_naming_the_key(url: str, why: str) -> None:
    for section in ("publish", "serve"):
        with pytest.raises(ConfigError, match=f"{section}.redis_url.*{why}"):
            load_config("local", environ={**os.environ, f"SKYREC__{section.upper()}__REDIS_URL": url})
    out = _skyrec("config", SKYREC__PUBLISH__REDIS_URL=url)
    assert out.returncode != 0 and "publish.redis_url" in out.stderr and why in out.stderr


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://user:pw@cache.internal:6380/2",
                                 "unix:///run/redis.sock"])
def test_good_redis_urls_pass(url: str) -> None:
    assert load_config("local", environ={**os.environ, "SKYREC__SERVE__REDIS_URL": url}).serve.redis_url == url


def test_status_fits_the_terminal_and_warns_when_redis_is_unreachable(skyrec_home) -> None:
    from skyrec.redis_local import free_port

    env = {"SKYREC_HOME": str(skyrec_home), "COLUMNS": "80",
           "SKYREC__PUBLISH__REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    out = _skyrec("status", **env)
    assert out.returncode == 0, out.stderr
    assert max(len(line) for line in out.stdout.splitlines()) <= 80
    text = " ".join(out.stdout.split())
    assert "warning: serving Redis" in text and "unreachable" in text and "published to serving Redis" not in text
    assert "models published in the lake (the serving Redis could not be read)" in text
    data = json.loads(_skyrec("status", "--json", **env).stdout)
    assert {"datasets", "models", "published"} <= set(data) and "error" in data["published"][0]


def test_config_dir_option_applies_to_the_command(skyrec_home) -> None:
    films = json.loads(_skyrec("--config-dir", "config/examples/films", "config", "variants").stdout)
    shipped = json.loads(_skyrec("config", "variants").stdout)
    assert "comedy_featured" in shipped and "comedy_featured" not in films and "drama" in films
    bad = _skyrec("--config-dir", str(skyrec_home), "config")
    assert bad.returncode == 2 and "no base.yaml" in bad.stderr


def test_status_reports_history_outside_the_snapshot_window(config, skyrec_home) -> None:
    from skyrec.storage import Lake, Producer

    lake = Lake.from_config(config)
    rel = config.dataset_path("activity_snapshot", interval_key="20261123T18")
    st = lake.stage("activity_snapshot", rel, Producer(task_id="ingest_activity"))
    with st.open("part-20261123.parquet", rows=5) as fh:
        fh.write(b"x")
    st.commit({"older_than_window": {"deltas": 3, "rows": 1234}})
    out = _skyrec("status", SKYREC_HOME=str(skyrec_home), COLUMNS="200")
    assert "1234 rows in 3 older deltas are outside its window" in " ".join(out.stdout.split()), out.stdout


def test_status_counts_catalogue_items_not_its_internal_tables(config, skyrec_home) -> None:
    from skyrec.status import collect
    from skyrec.storage import Lake, Producer

    lake = Lake.from_config(config)
    rel = config.dataset_path("catalogue", run_key="20261123T180000")
    st = lake.stage("catalogue", rel, Producer(task_id="build_catalogue"))
    for name, rows in (("catalogue.parquet", 1682), ("episodes.parquet", 1682), ("brands.parquet", 1682)):
        with st.open(name, rows=rows) as fh:
            fh.write(b"x")
    st.commit({"items": 1682})
    row = next(d for d in collect(config)["datasets"] if d["dataset"] == "catalogue")
    assert row["rows"] == 1682


def test_generate_prints_a_summary_for_people_and_json_on_request(skyrec_home) -> None:
    out = _skyrec("generate", "--users", "300", "--items", "200", "--days", "2", SKYREC_HOME=str(skyrec_home))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"generated into {skyrec_home}/source in ") and len(lines) == 5, out.stdout
    assert "events of 300 listeners" in lines[2] and "48 hourly files" in lines[2] and "bad on purpose" in lines[2]
    as_json = json.loads(_skyrec("generate", "--users", "300", "--items", "200", "--days", "2", "--json",
                                 SKYREC_HOME=str(skyrec_home)).stdout)
    assert as_json["users"] == 300 and as_json["activity_files"] == 48
    assert f"{as_json['activity_rows']:,} events" in lines[2]  # same seed, same data


@pytest.mark.integration
def test_stop_says_which_home_started_a_redis_it_did_not_stop(tmp_path) -> None:
    """`make stop` stops the serving Redis of its own home. One started from another home of the checkout (the
    film example's, .skyrec/films) is left running, and the command says so and how to stop it, instead of
    reporting it stopped."""
    from pathlib import Path

    from skyrec.demo import stop_all
    from skyrec.redis_local import LocalRedis, free_port, ping

    repo = Path(__file__).resolve().parents[2]
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if k not in ("SKYREC_HOME", "SKYREC_CONFIG_DIR")}
    environ.update(SKYREC_CONFIG_DIR=str(repo / "config"), SKYREC__PUBLISH__REDIS_URL=f"redis://127.0.0.1:{port}/0")

    def config(home: Path):
        return load_config("local", root=tmp_path, environ={**environ, "SKYREC_HOME": str(home)})

    sample, films = tmp_path / ".skyrec", tmp_path / ".skyrec" / "films"
    server = LocalRedis(port=port, dir=films / "redis").start(daemonize=True)
    try:
        said = stop_all(config(sample))
        assert ping("127.0.0.1", port), "a Redis this home did not start was stopped"
        assert not any(line.startswith("stopped Redis") for line in said), said
        (line,) = [x for x in said if "left running" in x]
        assert f"SKYREC_HOME={films} skyrec stop" in line and f"pid {server.pidfile.read_text().strip()}" in line
        assert stop_all(config(films))[-1] == f"stopped Redis on port {port}" and not ping("127.0.0.1", port)
    finally:
        server.stop()


@pytest.mark.integration
def test_stop_stops_the_api_that_serve_left_running_and_never_a_reused_pid(tmp_path) -> None:
    """`make serve` (`skyrec serve`, in the foreground of the user's shell) writes the home's api.pid; `make stop`
    from another shell stops that API and says so. A pidfile whose process has gone, its pid maybe given to
    another process since, is removed without signalling anything."""
    import json
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    from skyrec.demo import stop_all, stop_api
    from skyrec.redis_local import free_port

    repo = Path(__file__).resolve().parents[2]
    home, port = tmp_path / "home", free_port()
    environ = {k: v for k, v in os.environ.items() if k not in ("SKYREC_HOME", "SKYREC_CONFIG_DIR")}
    environ.update(SKYREC_CONFIG_DIR=str(repo / "config"), SKYREC_HOME=str(home),
                   SKYREC__PUBLISH__REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    cfg = load_config("local", root=tmp_path, environ=environ)
    api = subprocess.Popen([sys.executable, "-m", "skyrec", "serve", "--port", str(port)], env=environ,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                break
            except OSError:
                assert api.poll() is None and time.monotonic() < deadline, "the API did not start"
                time.sleep(0.2)
        assert json.loads((home / "api.pid").read_text())["pid"] == api.pid
        said = stop_all(cfg)
        assert said[0] == f"stopped the API (pid {api.pid}, port {port})", said
        assert api.wait(timeout=5) is not None and not (home / "api.pid").exists()
    finally:
        api.kill()
    # a stale pidfile naming a live process (this one) with another start: nothing is signalled
    (home / "api.pid").write_text(json.dumps({"pid": os.getpid(), "start": "1", "port": port}))
    assert stop_api(cfg) == f"the API was not running (pid {os.getpid()} has exited; its pidfile removed)"
    assert not (home / "api.pid").exists()


def test_demo_refuses_a_users_configuration_instead_of_emptying_its_home(tmp_path, monkeypatch) -> None:
    """`make demo` empties its home and runs the shipped rails on sample data. In a shell that exported
    SKYREC_CONFIG_DIR for the user's own data (as the README's "your own data" steps do) it refuses, saying why,
    and that data's lake and source are left as they were."""
    from pathlib import Path

    from skyrec.demo import run_demo

    films = Path(__file__).resolve().parents[2] / "config" / "examples" / "films"
    home = tmp_path / "home"
    (home / "lake").mkdir(parents=True)
    (home / "lake" / "keep.txt").write_text("the user's lake")
    monkeypatch.setenv("SKYREC_HOME", str(home))
    monkeypatch.setenv("SKYREC_CONFIG_DIR", str(films))
    assert run_demo() == 2
    assert (home / "lake" / "keep.txt").read_text() == "the user's lake"


def test_status_names_each_evaluations_own_confidence_level(skyrec_home, monkeypatch) -> None:
    """Not a hard-coded "95%": one level for every row goes in the title, several are each on its figures."""
    from typer.testing import CliRunner

    import skyrec.status
    from skyrec.cli import app

    def row(model: str, confidence: float) -> dict:
        return {"model": model, "version": "v1", "model_version": f"v1.{model}", "users": 10, "ndcg_at_k": "0.1",
                "recall_at_k": "0.2", "confidence": confidence, "split": "per_user", "gate": "ok",
                "overridden": False, "held": None, "rails": ["r"], "serving_known": True,
                "published": f"v1.{model}"}

    def show(*rows: dict) -> str:
        info = {"lake": "lake", "datasets": [], "models": list(rows), "published": [{"error": "no redis"}]}
        monkeypatch.setattr(skyrec.status, "collect", lambda config: info)
        out = CliRunner().invoke(app, ["status"], env={"COLUMNS": "200"})
        assert out.exit_code == 0, out.output
        return " ".join(out.output.split())

    assert "the evaluation each was published on (51% intervals)" in show(row("knn", 0.51), row("ease", 0.51))
    mixed = show(row("knn", 0.51), row("ease", 0.975))
    assert "the evaluation each was published on (intervals)" in mixed
    assert "recall_at_k 0.2 (51% intervals)" in mixed and "recall_at_k 0.2 (97.5% intervals)" in mixed
    assert "95%" not in mixed


def test_status_publications_read_at_80_columns_under_the_scheduler(skyrec_home, monkeypatch) -> None:
    """Under the scheduler a rail's publication and its model carry different run times (asset-triggered runs
    are dated to the microsecond), so the model version is not the publication id's prefix. At 80 columns each
    id stays whole on one line, the model's under its publication; wider, the model version is a column."""
    from typer.testing import CliRunner

    import skyrec.status
    from skyrec.cli import app

    pub, model = "v1.20261203T163012.654321-r2-abcdef12", "v1.20261203T162031.123456"
    rails = ["comedy_featured", "recommended_for_you", "thought_provoking"]
    info = {"lake": "lake", "datasets": [], "models": [], "redis_leftovers": {}, "redis_memory": {},
            "published": [{"variant": r, "publication": pub, "model_version": model, "age": "3m",
                           "users": 200000} for r in rails]}
    monkeypatch.setattr(skyrec.status, "collect", lambda config: info)

    def lines(columns: int) -> list[str]:
        out = CliRunner().invoke(app, ["status"], env={"COLUMNS": str(columns)})
        assert out.exit_code == 0, out.output
        return out.output.splitlines()

    narrow = lines(80)
    assert max(len(line) for line in narrow) <= 80
    for rail in rails:
        at = next(i for i, line in enumerate(narrow) if line.split()[:1] == [rail])
        assert narrow[at].split()[1] == pub, "\n".join(narrow)
        assert narrow[at + 1].split() == ["model", model], "\n".join(narrow)
    assert "model_version" not in " ".join(narrow)
    wide = lines(120)
    assert any(line.split()[:3] == ["variant", "publication", "model_version"] for line in wide)
    assert all(any(line.split()[:3] == [rail, pub, model] for line in wide) for rail in rails)


def test_status_outputs_table_never_crops_a_figure_at_80_columns(skyrec_home, monkeypatch) -> None:
    """The scheduler's run keys carry microseconds: with them the outputs table needed 82 columns at 80 and
    cropped its last columns ("13.7m" read "13.7", the header "quarantine"). Figures stay whole; a name too
    long for the column folds."""
    from typer.testing import CliRunner

    import skyrec.status
    from skyrec.cli import app

    rails = ["recommended_for_you", "a_very_long_rail_name_for_the_weekend_mix"]
    key = "20261203T171242.309884"
    datasets = [{"dataset": "raw_metadata", "latest": "raw/metadata/run=20261203T160000", "age": "13.7m",
                 "rows": 13810, "quarantined": 14}]
    datasets += [{"dataset": "predictions", "version": "v1", "variant": r, "latest": f"predictions/{r}/v1/run={key}",
                  "age": "10.8m", "rows": 106669, "quarantined": 0} for r in rails]
    info = {"lake": "lake", "datasets": datasets, "models": [], "redis_leftovers": {}, "redis_memory": {},
            "published": []}
    monkeypatch.setattr(skyrec.status, "collect", lambda config: info)
    out = CliRunner().invoke(app, ["status"], env={"COLUMNS": "80"})
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert max(len(line) for line in lines) <= 80, out.output
    assert any(line.split() == ["dataset", "latest", "age", "rows", "quarantined"] for line in lines), out.output
    assert any(line.split() == ["raw_metadata", "20261203T160000", "13.7m", "13810", "14"] for line in lines)
    assert sum(line.split() == ["predictions", key, "10.8m", "106669", "0"] for line in lines) == 2, out.output
    assert any(line.split() == ["v1", "recommended_for_you"] for line in lines), out.output
