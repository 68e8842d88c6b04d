"""`skyrec gc` as an operator runs it: a subprocess over a local lake with abandoned and live staging."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from skyrec.storage import Lake, Producer


def test_gc_command_collects_abandoned_staging_only(config, skyrec_home: Path) -> None:
    lake = Lake.from_config(config)
    rel = config.dataset_path("catalogue", run_key="20261123T100000")
    st = lake.stage("catalogue", rel, Producer(task_id="won"))
    with st.open("part-0.bin", rows=1) as fh:
        fh.write(b"a")
    st.commit()
    dead = lake.stage("catalogue", rel, Producer(task_id="dead", host="another-host"), force=True)
    with dead.open("part-0.bin", rows=1) as fh:
        fh.write(b"b")
    young = lake.stage("catalogue", rel, Producer(task_id="young", host="another-host"), force=True)
    old = time.time() - 3 * 86400
    for root, _, files in os.walk(dead.path("")):
        for name in files:
            os.utime(os.path.join(root, name), (old, old))
    env = {**os.environ, "SKYREC_HOME": str(skyrec_home)}
    cmd = [sys.executable, "-m", "skyrec", "gc"]
    dry = subprocess.run([*cmd, "--dry-run"], env=env, capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert f"would remove {rel}/{dead.staging_rel}" in dry.stdout and Path(dead.path("")).exists()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "1 abandoned item(s) removed" in out.stdout
    assert not Path(dead.path("")).exists()
    assert Path(young.path("")).exists()  # within the grace period
    lake.verify(lake.require(rel))
