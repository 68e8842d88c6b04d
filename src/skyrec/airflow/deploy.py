"""Deploy without Airflow plugins: a versioned wheel plus the thin DAG folder, synced together.

DAG files and the package they import must never get out of step (a DAG of one version calling the
operator of another is how a retry ends up reattaching to a job with different semantics). So a deploy
is one step that:

1. builds the ``skyrec`` wheel (``uv build --wheel``; ``python -m build`` as a fallback), versioned as
   ``<package version>+d<deploy time>.g<git sha>[.dirty]`` -- the *deploy version* that job records, pod labels and
   Dataflow labels carry (``SKYREC_DEPLOY_VERSION`` on workers), so a retry never reattaches across an upgrade;
2. uploads the wheel to ``<target>/wheels/``;
3. syncs ``dags/`` to ``<target>/dags/`` **with deletion** of files that are no longer in the repo
   (a stale DAG file would keep scheduling a DAG that no longer exists in code);
4. writes ``<target>/deploy.json`` last: version, git sha, wheel, and every DAG file with its sha256.

``target`` is a local folder (tests, a shared volume) or any fsspec URL (``gs://composer-bucket``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import fsspec

from skyrec import __version__
from skyrec.config import Config, ConfigError


def git_sha(root: Path) -> tuple[str, bool]:
    """(short sha, dirty) of the checkout; ("nogit", False) outside a git repo."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "src", "dags"], cwd=root,
                                    capture_output=True, text=True, check=True).stdout.strip())
        return sha, dirty
    except (OSError, subprocess.CalledProcessError):
        return "nogit", False


def build_wheel(root: Path, out_dir: Path) -> Path:
    uv = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    commands = [[uv, "build", "--wheel", "--out-dir", str(out_dir), str(root)]] if Path(uv).exists() else []
    commands.append([sys.executable, "-m", "build", "--wheel", "--outdir", str(out_dir), str(root)])
    errors = []
    for cmd in commands:
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        wheels = sorted(out_dir.glob("skyrec-*.whl"))
        if proc.returncode == 0 and wheels:
            return wheels[-1]
        errors.append(f"{' '.join(cmd[:3])}: {proc.stderr.strip()[-500:]}")
    raise ConfigError("could not build the skyrec wheel:\n  " + "\n  ".join(errors))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def deploy(config: Config, target: str | None = None) -> dict[str, Any]:
    """Build the wheel and sync it with the DAG folder to ``target``; returns the deploy manifest."""
    target = target or os.environ.get("SKYREC_DEPLOY_TARGET")
    if not target:
        raise ConfigError("deploy: no target (pass one or set SKYREC_DEPLOY_TARGET, e.g. gs://bucket/airflow)")
    root = Path(config.project_root)
    dags_src = root / "dags"
    sha, dirty = git_sha(root)
    now = dt.datetime.now(dt.UTC)
    # the deploy time orders deploys (an older deploy never cancels a newer one's job: backends.deploy_order)
    version = f"{__version__}+d{now:%Y%m%d%H%M%S}.g{sha}{'.dirty' if dirty else ''}"
    fs, base = fsspec.core.url_to_fs(target)
    base = base.rstrip("/")
    with tempfile.TemporaryDirectory(prefix="skyrec-deploy-") as tmp:
        wheel = build_wheel(root, Path(tmp))
        fs.makedirs(f"{base}/wheels", exist_ok=True)
        fs.put_file(str(wheel), f"{base}/wheels/{wheel.name}")
        wheel_sha = _sha256(wheel)

    files = {str(p.relative_to(dags_src)): _sha256(p) for p in sorted(dags_src.rglob("*"))
             if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")}
    fs.makedirs(f"{base}/dags", exist_ok=True)
    for rel in files:
        dest = f"{base}/dags/{rel}"
        fs.makedirs(dest.rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(str(dags_src / rel), dest)
    removed = []
    for full in sorted(fs.find(f"{base}/dags")):
        rel = full[len(f"{base}/dags/"):] if full.startswith(f"{base}/dags/") else full.rsplit("/dags/", 1)[-1]
        if rel not in files:
            fs.rm(full)
            removed.append(rel)
    manifest = {"deploy_version": version, "package_version": __version__, "git_sha": sha, "dirty": dirty,
                "deployed_at": now.isoformat(timespec="seconds"),
                "wheel": {"name": wheel.name, "sha256": wheel_sha}, "dags": files, "removed": removed,
                "env": {"SKYREC_DEPLOY_VERSION": version}}
    fs.pipe_file(f"{base}/deploy.json", json.dumps(manifest, indent=1, sort_keys=True).encode())
    return manifest
