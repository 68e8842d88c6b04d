"""Helpers for the real-scheduler tests: a throwaway Postgres cluster, job records, the metadata DB.

Postgres is Debian's ``postgresql`` (``make test-deps`` installs it): ``initdb`` into a temporary folder,
run as the ``postgres`` OS user when the tests run as root (Postgres refuses to run as root), on a free
loopback port with its unix socket in the same folder, ``fsync`` off (a throwaway cluster). Never skipped:
a missing server is an error that says how to install it.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from skyrec.redis_local import free_port


def postgres_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found: run `make test-deps` "
                       "(installs Debian's postgresql) or `apt-get install postgresql`")


class LocalPostgres:
    """A Postgres cluster for one test session, owned by the test (started and stopped by it)."""

    def __init__(self) -> None:
        self.bindir = postgres_bindir()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="skyrec-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.as_root = os.geteuid() == 0
        if self.as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/airflow"
        self.dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname=airflow"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=self.root)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}\n"
                               f"{self.log.read_text()[-2000:] if self.log.exists() else ''}")
        return proc

    def start(self) -> LocalPostgres:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60", "start")
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "airflow")
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        import psycopg2

        conn = psycopg2.connect(self.dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall())
        finally:
            conn.close()


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def launches(state_dir: str | Path, *, dag_id: str | None = None, task_id: str | None = None) -> list[dict[str, Any]]:
    """Every local job launch recorded under ``<state>/jobs``, with its folder (``_dir``)."""
    out = []
    for p in sorted(Path(state_dir, "jobs").glob("*/launches/*/launch.json")):
        rec = read_json(p)
        if not rec:
            continue
        if (dag_id and rec.get("dag_id") != dag_id) or (task_id and rec.get("task_id") != task_id):
            continue
        out.append({**rec, "_dir": str(p.parent)})
    return out


def manifests(lake: str | Path, prefix: str) -> dict[str, list[str]]:
    """Committed output folder under ``prefix`` -> its manifest revisions (``_manifest/*.json``)."""
    out: dict[str, list[str]] = {}
    for m in sorted(Path(lake).glob(f"{prefix}/**/_manifest/*.json")):
        out.setdefault(str(m.parent.parent.relative_to(lake)), []).append(m.name)
    return out


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
