"""create_redis_dump writes the RDB directly from the predictions' RESP files and proves that very file: a
scratch redis-server loads it, the key count and probe users/seed items must equal the committed
predictions; a wrong value in the files is refused and nothing is committed."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import synth

from skyrec.data.lakeio import file_url
from skyrec.jobs.base import RunInfo, execute
from skyrec.models.ease import EASEModel
from skyrec.publish.rdb import crc64
from skyrec.publish.resp import encode_command, parse_commands
from skyrec.storage import Lake, Producer

VARIANT = "comedy_featured"
pytestmark = pytest.mark.integration


def _run() -> RunInfo:
    return RunInfo(dag_id=f"precompute_recommendations_als_{VARIANT}_v1", run_id="r0", task_id="t",
                   logical_date=synth.AT + dt.timedelta(hours=1))


def _job(name: str, cfg) -> tuple[int, dict]:
    return execute(name, config=cfg, run=_run(), params={"variant": VARIANT})


@pytest.fixture(params=["packed", "json"])
def cfg(request, config_factory, redis_server):
    c = config_factory({"precompute": {"k": 8, "similar_k": 5, "batch_size": 64, "shard_users": 50, "threads": 1},
                        "publish": {"redis_url": redis_server.url, "probe_users": 10, "encoding": request.param}})
    s = synth.build(c, n_users=150, n_items=200, bad_user=False)
    synth.publish_model(c, s, EASEModel(regularization=20.0).fit(s.seen))  # model.json names its class: sim keys
    code, payload = _job("compute_predictions", c)
    assert code == 0, payload.get("error")
    return c


def test_the_committed_rdb_is_the_proven_one(cfg, tmp_path: Path) -> None:
    code, payload = _job("create_redis_dump", cfg)
    assert code == 0, payload.get("error")
    lake = Lake.from_config(cfg)
    m = lake.require(payload["summary"]["outputs"][0])
    pred = lake.require(m.meta["predictions"])
    assert m.meta["method"] == "rdb" and m.meta["commands"] == pred.meta["commands"]
    assert m.meta["keys"] == pred.meta["keys"] and m.meta["probes_checked"] >= 10
    assert m.meta["similar_probes_checked"] >= 4 and m.meta["sim_keys"] > 100
    lake.verify(m)
    data = Path(file_url(lake, m, "dump.rdb")).read_bytes()
    assert f"{crc64(data[:-8]):016x}" == m.meta["rdb_crc64"] and len(data) == m.meta["rdb_bytes"]
    assert synth.restored_key_count(data, tmp_path / "restore") == pred.meta["keys"]
    assert not list(Path(cfg.state_dir).rglob("redis-*.pid")), "scratch server left behind"


def test_prediction_parquet_reads_back_as_the_predictions_schema(cfg) -> None:
    """The id columns are written dictionary-encoded; readers still get PREDICTIONS' plain types."""
    import pyarrow.parquet as pq

    from skyrec.data.schemas import PREDICTIONS

    lake = Lake.from_config(cfg)
    pred = lake.require(cfg.dataset_path("predictions", variant=VARIANT, version="v1", run_key=_run().run_key))
    tables = [pq.read_table(file_url(lake, pred, n)) for n in pred.meta["parquet_files"]]
    assert all(t.schema == PREDICTIONS for t in tables)
    assert sum(t.num_rows for t in tables) == pred.meta["rows"] > 0
    assert all(t.column("user_id").null_count == 0 == t.column("item_id").null_count for t in tables)


@pytest.mark.parametrize("kind", ["rec", "sim"])
def test_a_wrong_value_in_the_files_is_refused(cfg, kind: str) -> None:
    """Every value of one kind rotated by a byte (same sizes, so the manifest's size check passes): the
    probes read back from the loaded RDB differ from the predictions and nothing is committed."""
    lake = Lake.from_config(cfg)
    pred = lake.require(cfg.dataset_path("predictions", variant=VARIANT, version="v1", run_key=_run().run_key))
    names = [n for n in pred.meta["resp_files"] if n.startswith("sim/" if kind == "sim" else "resp/part-")]
    assert names
    for name in names:
        path = Path(file_url(lake, pred, name))
        out = []
        for args in parse_commands(path.read_bytes()):
            if b":rec:" in args[1] or b":sim:" in args[1]:
                args[2] = args[2][1:] + args[2][:1]
            out.append(encode_command(*args))
        path.write_bytes(b"".join(out))
    code, payload = _job("create_redis_dump", cfg)
    assert code != 0 and f"{kind} " in payload["error"], payload.get("error")
    assert not lake.committed(cfg.dataset_path("redis_dump", variant=VARIANT, version="v1", run_key=_run().run_key))


def test_a_remote_lake_gets_the_proven_file_uploaded(cfg, monkeypatch) -> None:
    """Where the lake is not a local folder the RDB is written and proven in the scratch folder, then copied
    into the stage: the committed bytes are the proven ones (same CRC-64 as the manifest records)."""
    from skyrec import storage

    real_init = storage.Lake.__init__

    def remote(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self.is_local = False  # every lake of this test takes the remote branches (download, upload)

    monkeypatch.setattr(storage.Lake, "__init__", remote)
    code, payload = _job("create_redis_dump", cfg)
    assert code == 0, payload.get("error")
    lake = Lake.from_config(cfg)
    m = lake.require(payload["summary"]["outputs"][0])
    lake.verify(m)
    with lake.open(m, "dump.rdb") as fh:
        data = fh.read()
    assert f"{crc64(data[:-8]):016x}" == m.meta["rdb_crc64"] and m.meta["keys"] > 150


def test_probe_lists_are_whole_even_across_row_groups(config_factory) -> None:
    """The probes read one row group per shard file and its neighbours: a user whose rows straddle a row-group
    boundary still gets its whole list, equal to reading the whole file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from skyrec.data.schemas import PREDICTIONS
    from skyrec.publish.verify import probe_expectations

    lake = Lake.from_config(config_factory({}))
    users = [f"u{u:03d}" for u in range(40) for _ in range(5)]  # 5 rows per user, row groups of 7 rows
    table = pa.table({"user_id": users, "rank": pa.array([r % 5 + 1 for r in range(200)], pa.int16()),
                      "item_id": [f"i{r}" for r in range(200)], "score": pa.array([1.0 - r / 1000 for r in range(200)],
                                                                                  pa.float32())}, schema=PREDICTIONS)
    stage = lake.stage("predictions", "probe-test", Producer())
    with stage.open("parquet/part-00000.parquet", "wb", rows=200) as fh:
        pq.write_table(table, fh, row_group_size=7)
    m = stage.commit({})
    whole = {}
    for row in table.to_pylist():
        whole.setdefault(row["user_id"], []).append([row["item_id"], row["score"]])
    for seed in range(12):
        got = probe_expectations(lake, m, 3, seed=seed)
        assert got and all(v == whole[u] for u, v in got.items()), seed
