from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from skyrec.config import ConfigError, check_path_field, load_config

ROOT = Path(__file__).resolve().parents[2]
REFERENCE_RAILS = {"comedy_featured", "drama_featured", "gripping_stories", "music_mixes",
                   "recommended_for_you", "thought_provoking"}


@pytest.mark.parametrize("env", ["local", "dev", "int", "prod"])
def test_every_environment_validates(env: str) -> None:
    cfg = load_config(env, root=ROOT, environ={})
    assert cfg.env == env
    assert set(cfg.variants) == REFERENCE_RAILS
    for v in cfg.variants.values():
        assert v.model in cfg.models and v.version


def test_env_layers_over_base() -> None:
    local = load_config("local", root=ROOT, environ={})
    prod = load_config("prod", root=ROOT, environ={})
    assert local.jobs.backend == "local" and prod.jobs.backend == "kubernetes"
    assert prod.lake_url.startswith("gs://")
    # untouched keys are inherited from base
    assert prod.precompute.k == local.precompute.k


def test_environment_variables_override_and_are_named_in_errors() -> None:
    cfg = load_config("local", root=ROOT, environ={"SKYREC__PRECOMPUTE__K": "77"})
    assert cfg.precompute.k == 77
    with pytest.raises(ConfigError, match=r"environment \(SKYREC__\*\): precompute\.k"):
        load_config("local", root=ROOT, environ={"SKYREC__PRECOMPUTE__K": "0"})


def _config_dir(tmp_path: Path) -> Path:
    d = tmp_path / "config"
    shutil.copytree(ROOT / "config", d)
    return d


def test_error_names_file_and_key(tmp_path: Path) -> None:
    d = _config_dir(tmp_path)
    (d / "env" / "local.yaml").write_text("env: local\npublish:\n  strategy: teleport\n")
    with pytest.raises(ConfigError) as exc:
        load_config("local", root=ROOT, environ={"SKYREC_CONFIG_DIR": str(d)})
    msg = str(exc.value)
    assert str(d / "env" / "local.yaml") in msg and "publish.strategy" in msg


def test_unknown_key_rejected_with_its_file(tmp_path: Path) -> None:
    d = _config_dir(tmp_path)
    (d / "env" / "local.yaml").write_text("env: local\nprecompute:\n  kk: 3\n")
    with pytest.raises(ConfigError, match=r"local\.yaml: precompute\.kk"):
        load_config("local", root=ROOT, environ={"SKYREC_CONFIG_DIR": str(d)})


def test_variant_naming_unknown_model(tmp_path: Path) -> None:
    d = _config_dir(tmp_path)
    (d / "env" / "local.yaml").write_text("env: local\nvariants:\n  music_mixes:\n    model: nope\n")
    with pytest.raises(ConfigError, match=r"local\.yaml: variants\.music_mixes\.model.*unknown model 'nope'"):
        load_config("local", root=ROOT, environ={"SKYREC_CONFIG_DIR": str(d)})


def test_invalid_yaml_reports_line(tmp_path: Path) -> None:
    d = _config_dir(tmp_path)
    (d / "env" / "local.yaml").write_text("env: local\npublish: [unclosed\n")
    with pytest.raises(ConfigError, match=r"local\.yaml:\d+:\d+: invalid YAML"):
        load_config("local", root=ROOT, environ={"SKYREC_CONFIG_DIR": str(d)})


def test_unknown_environment() -> None:
    with pytest.raises(ConfigError, match="no such environment 'staging'"):
        load_config("staging", root=ROOT, environ={})


def test_dataset_paths_templated_and_safe() -> None:
    cfg = load_config("local", root=ROOT, environ={})
    assert cfg.dataset_path("model", model="als", version="v1", run_key="20260101T000000") == \
        "models/als/v1/run=20260101T000000"
    with pytest.raises(ConfigError, match="needs field 'run_key'"):
        cfg.dataset_path("model", model="als", version="v1")
    for bad in ["../x", "a/b", "", ".."]:
        with pytest.raises(ConfigError):
            check_path_field("version", bad)


def test_cli_config_error_is_one_clear_line_not_a_traceback(tmp_path: Path) -> None:
    d = _config_dir(tmp_path)
    (d / "env" / "local.yaml").write_text("env: local\nserve:\n  port: 99999999\n")
    env = {**os.environ, "SKYREC_CONFIG_DIR": str(d)}
    proc = subprocess.run([sys.executable, "-m", "skyrec", "config"], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 2
    assert "serve.port" in proc.stderr and "local.yaml" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_home_comes_from_the_environ_given_not_the_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYREC_HOME", "/somewhere/else")
    cfg = load_config("local", root=ROOT, environ={"SKYREC_HOME": str(tmp_path)})
    assert cfg.home == str(tmp_path) and cfg.lake_url.startswith(str(tmp_path))
    assert load_config("local", root=ROOT, environ={}).home == str(ROOT / ".skyrec")


def test_the_gate_metric_is_one_the_evaluation_computes_with_an_interval() -> None:
    """A gate on a figure without a paired comparison (coverage) would skip its baseline check silently."""
    with pytest.raises(ConfigError, match=r"environment \(SKYREC__\*\): training\.quality_gate\.metric"):
        load_config("local", root=ROOT, environ={"SKYREC__TRAINING__QUALITY_GATE__METRIC": "coverage"})
    cfg = load_config("local", root=ROOT, environ={"SKYREC__TRAINING__QUALITY_GATE__METRIC": "recall_at_k"})
    assert cfg.training.quality_gate.metric == "recall_at_k"


def test_an_evaluation_sample_below_the_gates_minimum_is_refused_naming_both_keys() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config("local", root=ROOT, environ={"SKYREC__TRAINING__EVAL_MAX_USERS": "50"})
    assert "eval_max_users (50) is below quality_gate.min_users (100)" in str(exc.value)
    load_config("local", root=ROOT, environ={"SKYREC__TRAINING__EVAL_MAX_USERS": "50",
                                             "SKYREC__TRAINING__QUALITY_GATE__MIN_USERS": "50"})


def test_a_layer_replaces_a_search_space_whole(tmp_path: Path) -> None:
    """base.yaml searches kNN's neighbours as an int range; an environment that searches a choice gives another
    space (merged into the range it would be neither), and an error in it names the layer that wrote it."""
    d = _config_dir(tmp_path)
    (d / "env" / "local.yaml").write_text(
        (d / "env" / "local.yaml").read_text()
        + "\ntraining:\n  search:\n    spaces:\n      knn:\n        neighbours: {choice: [10, 50, 200]}\n")
    cfg = load_config("local", root=ROOT, environ={"SKYREC_CONFIG_DIR": str(d)})
    space = cfg.training.search.spaces["knn"]["neighbours"]
    assert space is not None and space.choice == [10, 50, 200] and space.int_range is None and not space.log
    assert cfg.training.search.spaces["knn"]["bm25_k1"] is not None  # the model's other spaces are kept
    with pytest.raises(ConfigError) as exc:
        load_config("local", root=ROOT, environ={"SKYREC_CONFIG_DIR": str(d),
                                                 "SKYREC__TRAINING__SEARCH__SPACES__KNN__NEIGHBOURS": "{float: [0.5, 0.1]}"})
    assert "environment (SKYREC__*): training.search.spaces.knn.neighbours" in str(exc.value)


@pytest.mark.parametrize(("var", "key"), [("SKYREC__TRAINING__SPLIT__TEST_ITEMS", "test_items"),
                                          ("SKYREC__PUBLISH__KEEP_VERSIONS", "keep_versions"),
                                          ("SKYREC__TRAINING__SPLIT__TEST_FRACTION", "test_fraction")])
def test_a_boolean_for_a_number_is_refused_not_taken_as_1(var: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"environment \(SKYREC__\*\): .*{key}: True is a boolean, not a number"):
        load_config("local", root=ROOT, environ={var: "true"})


def test_a_check_of_several_keys_names_where_each_came_from() -> None:
    """Not the file that set the parent key first: the one that set the value the check is about."""
    with pytest.raises(ConfigError) as err:
        load_config("local", root=ROOT, environ={"SKYREC__TRAINING__QUALITY_GATE__MIN_USERS": "1000000"})
    assert "environment (SKYREC__*): training: " in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config("local", root=ROOT, environ={"SKYREC__TRAINING__EVAL_MAX_USERS": "10",
                                                 "SKYREC__TRAINING__QUALITY_GATE__MIN_USERS": "100"})
    assert "\n  environment (SKYREC__*): training: " in str(err.value) and "base.yaml" not in str(err.value)
