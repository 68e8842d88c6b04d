"""``skyrec up`` / ``skyrec down``: skyrec under the real Airflow scheduler on one machine.

``up`` starts, as separate processes owned by this checkout:

* the serving ``redis-server`` (``publish.redis_url`` = ``serve.redis_url``, when it is on this machine),
* Airflow's ``api-server`` (UI, public API and the execution API the task workers call),
  ``scheduler`` (LocalExecutor: tasks of several DAGs run concurrently), ``dag-processor`` and ``triggerer``,
* the skyrec API (``python -m skyrec serve``, a subprocess: ``skyrec.airflow`` does not import
  ``skyrec.serve``).

Every Airflow process gets one environment: the DAG folder and skyrec variables of ``airflow_env``,
``AIRFLOW__CORE__EXECUTION_API_SERVER_URL`` pointing at *this* api-server's port, one JWT secret (kept in
``<home>/run/jwt_secret``) so the execution API accepts the scheduler's task tokens, and the LocalExecutor.
The metadata DB is Airflow's own setting: SQLite under ``AIRFLOW_HOME`` unless
``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` names another (Postgres in the tests and in production).

Ownership: ``<home>/run/platform.json`` records each process's pid, its start time (``/proc``) and the boot
id. A process counts as ours only when all three still match, so ``down`` never signals a pid that was
reused, and ``up`` never adopts a server that merely listens on a configured port: a busy port is an
error naming the port and the setting that moves it. ``up`` is idempotent (components already running are
kept, missing ones are started again); ``down`` stops what ``up`` started, and nothing else. Heavy jobs
run in their own process groups and are not stopped by ``down``: a retry reattaches to them or adopts
their committed output (the job-identity contract).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from skyrec.airflow.backends.local import group_members
from skyrec.config import Config
from skyrec.redis_local import port_owner

AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
COMPONENTS = ("redis", *AIRFLOW_COMPONENTS, "api")
STOP_ORDER = ("api", "scheduler", "triggerer", "dag-processor", "api-server", "redis")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
SIMPLE_AUTH = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


class PlatformError(RuntimeError):
    """``skyrec up``/``down`` could not do what was asked; the message says why and what to change."""


class PortBusy(PlatformError):
    pass


# ---- processes we own ------------------------------------------------------------------------------


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def proc_start(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22); None if gone/zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    rest = raw[raw.rindex(")") + 2:].split()
    if rest[0] in {"Z", "X"}:
        return None
    return int(rest[19])


def is_ours(record: dict[str, Any]) -> bool:
    """The recorded process is still the one we started: same pid, same start time, same boot."""
    pid = record.get("pid")
    if not pid or record.get("boot_id") != boot_id():
        return False
    start = proc_start(int(pid))
    return start is not None and start == record.get("proc_start")


def listening(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _http_json(url: str, timeout: float = 2.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


# ---- the platform --------------------------------------------------------------------------------


@dataclass
class Component:
    name: str
    argv: list[str]
    port: int | None = None
    setting: str = ""  # what to set to move it to another port
    url: str = ""


@dataclass
class UpResult:
    started: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


class Platform:
    """skyrec's processes under the real Airflow scheduler, owned by this checkout (``<home>/run``)."""

    def __init__(self, config: Config, *, api_port: int | None = None, serve_port: int | None = None,
                 redis_port: int | None = None, environ: dict[str, str] | None = None) -> None:
        self.config = config
        self.environ = dict(os.environ if environ is None else environ)
        self.api_port = int(api_port or config.airflow.api_port)
        self.serve_host = config.serve.host
        self.serve_port = int(serve_port or config.serve.port)
        self.redis_port_flag = redis_port
        publish, serve = urlparse(config.publish.redis_url), urlparse(config.serve.redis_url)
        if redis_port is None and (publish.hostname, publish.port) != (serve.hostname, serve.port):
            raise PlatformError(f"publish.redis_url ({config.publish.redis_url}) and serve.redis_url "
                                f"({config.serve.redis_url}) name different servers: the API would not serve "
                                "what the DAGs publish; make them the same")
        self.redis_host = publish.hostname or "127.0.0.1"
        self.redis_port = int(redis_port or publish.port or 6379)
        self.redis_db = (publish.path or "/0").lstrip("/") or "0"
        self.local_redis = self.redis_host in LOOPBACK
        self.run_dir = Path(config.home) / "run"
        self.log_dir = self.run_dir / "logs"
        self.state_file = self.run_dir / "platform.json"
        self.python = sys.executable

    # ---- environment ---------------------------------------------------------------------------
    @property
    def redis_url(self) -> str:
        return f"redis://{self.redis_host}:{self.redis_port}/{self.redis_db}"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def api_url(self) -> str:
        host = "127.0.0.1" if self.serve_host in {"0.0.0.0", "::"} else self.serve_host
        return f"http://{host}:{self.serve_port}"

    def _jwt_secret(self) -> str:
        path = self.run_dir / "jwt_secret"
        if not path.exists():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
        return path.read_text().strip()

    def env(self) -> dict[str, str]:
        """The environment of every process ``up`` starts.

        Airflow settings already in the caller's environment win over ``airflow_env``'s defaults (as for
        ``skyrec run``), except those that must agree across the components: executor, API port and the
        execution-API URL, the JWT secret.
        """
        from skyrec.airflow.runner import airflow_env

        env = dict(self.environ)
        for key, value in airflow_env(self.config).items():
            if key == "AIRFLOW_HOME" or key.startswith("AIRFLOW__"):
                env.setdefault(key, value)
            else:
                env[key] = value
        env.setdefault("AIRFLOW__API__WORKERS", "1")  # one uvicorn worker: a 2-core machine runs all of it
        env.setdefault("AIRFLOW__CORE__AUTH_MANAGER", SIMPLE_AUTH)
        env.update({
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.api_port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": self._jwt_secret(),
            "SKYREC__PUBLISH__REDIS_URL": self.config.publish.redis_url if self.redis_port_flag is None
            else self.redis_url,
            "SKYREC__SERVE__REDIS_URL": self.config.serve.redis_url if self.redis_port_flag is None
            else self.redis_url,
            "SKYREC__SERVE__PORT": str(self.serve_port),
            "SKYREC__AIRFLOW__API_PORT": str(self.api_port),
            "PYTHONUNBUFFERED": "1",
        })
        env["PATH"] = f"{Path(self.python).parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def airflow_home(self, env: dict[str, str] | None = None) -> Path:
        return Path((env or self.env())["AIRFLOW_HOME"])

    def components(self) -> list[Component]:
        af = [self.python, "-m", "airflow"]
        out = []
        if self.local_redis:
            out.append(Component(
                "redis", ["redis-server", "--port", str(self.redis_port), "--bind", self.redis_host,
                          "--dir", str(Path(self.config.home) / "redis"), "--dbfilename", "dump.rdb",
                          "--save", "3600 1", "--appendonly", "no", "--protected-mode", "yes"],
                port=self.redis_port, setting="publish.redis_url and serve.redis_url (or --redis-port)",
                url=self.redis_url))
        out += [
            Component("api-server", [*af, "api-server", "--host", "127.0.0.1", "--port", str(self.api_port)],
                      port=self.api_port, setting="airflow.api_port (or --api-port)", url=self.ui_url),
            Component("scheduler", [*af, "scheduler", "--skip-serve-logs"]),
            Component("dag-processor", [*af, "dag-processor"]),
            Component("triggerer", [*af, "triggerer", "--skip-serve-logs"]),
            Component("api", [self.python, "-m", "skyrec", "serve", "--host", self.serve_host,
                              "--port", str(self.serve_port)],
                      port=self.serve_port, setting="serve.port (or --serve-port)", url=self.api_url),
        ]
        return out

    # ---- state ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {"components": {}}
        data.setdefault("components", {})
        return data

    def _save(self, state: dict[str, Any]) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
        os.replace(tmp, self.state_file)

    def running(self) -> dict[str, dict[str, Any]]:
        """Components recorded in the state file whose process is still the one we started."""
        return {name: rec for name, rec in self.state()["components"].items() if is_ours(rec)}

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    # ---- up ------------------------------------------------------------------------------------
    def _check_ports(self, todo: list[Component], ours: dict[str, dict[str, Any]]) -> None:
        for comp in todo:
            host = self.redis_host if comp.name == "redis" else "127.0.0.1"
            if comp.port is not None and listening(host, comp.port):
                raise PortBusy(f"port {comp.port} ({comp.name}) is in use by {port_owner(comp.port)}, which this "
                               f"checkout's `skyrec up` did not start (it never adopts a server it does not own). "
                               f"Stop that process or choose another port: {comp.setting}.")
        for name, rec in ours.items():  # running components keep their ports: moving one needs a restart
            want = next((c.port for c in self.components() if c.name == name), None)
            if rec.get("port") != want:
                raise PlatformError(f"{name} is running on port {rec.get('port')}, not {want}: run `skyrec down` "
                                    "first to change its port")

    def _migrate(self, env: dict[str, str]) -> float:
        """``airflow db migrate`` once per (Airflow version, metadata DB); a marker makes later calls free."""
        import hashlib
        from importlib.metadata import version

        airflow_version = version("apache-airflow")

        conn = env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") or f"sqlite:{self.airflow_home(env)}/airflow.db"
        marker = self.run_dir / f"db-migrated-{airflow_version}-{hashlib.sha256(conn.encode()).hexdigest()[:12]}"
        if marker.exists():
            return 0.0
        t0 = time.monotonic()
        log = self.log_path("db-migrate")
        with open(log, "ab") as fh:
            proc = subprocess.run([self.python, "-m", "airflow", "db", "migrate"], env=env, stdout=fh,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False)
        if proc.returncode != 0:
            raise PlatformError(f"`airflow db migrate` failed (exit {proc.returncode}); log: {log}\n"
                                + _tail(log))
        marker.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        return time.monotonic() - t0

    def _start(self, comp: Component, env: dict[str, str]) -> dict[str, Any]:
        if comp.name == "redis":
            Path(self.config.home, "redis").mkdir(parents=True, exist_ok=True)
            from skyrec.redis_local import redis_server_binary

            comp.argv[0] = redis_server_binary()
        log = self.log_path(comp.name)
        with open(log, "ab") as fh:
            fh.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} skyrec up: {' '.join(comp.argv)}\n".encode())
            fh.flush()
            proc = subprocess.Popen(comp.argv, env=env, stdin=subprocess.DEVNULL, stdout=fh,
                                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                                    cwd=self.config.project_root)
        start = None
        for _ in range(50):  # /proc/<pid>/stat appears with the fork; read it while the process is ours
            start = proc_start(proc.pid)
            if start is not None:
                break
            time.sleep(0.01)
        return {"pid": proc.pid, "proc_start": start, "boot_id": boot_id(), "argv": comp.argv,
                "port": comp.port, "log": str(log), "url": comp.url, "started_at": time.time()}

    def _ready(self, comp: Component, health: dict[str, Any] | None) -> bool:
        if comp.name == "redis":
            from skyrec.redis_local import ping

            return ping(self.redis_host, self.redis_port)
        if comp.name == "api":
            return _http_json(f"{self.api_url}/healthz")[0] == 200
        if comp.name == "api-server":
            return health is not None
        key = {"scheduler": "scheduler", "triggerer": "triggerer", "dag-processor": "dag_processor"}[comp.name]
        return bool(health and (health.get(key) or {}).get("status") == "healthy")

    def _wait_ready(self, todo: list[Component], records: dict[str, dict[str, Any]], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = {c.name: c for c in todo}
        while pending:
            health = None
            if any(n in pending for n in AIRFLOW_COMPONENTS):
                code, body = _http_json(f"{self.ui_url}/api/v2/monitor/health")
                health = body if code == 200 and isinstance(body, dict) else None
            for name, comp in list(pending.items()):
                if not is_ours(records[name]):
                    raise PlatformError(f"{name} exited during start-up; its log: {records[name]['log']}\n"
                                        + _tail(Path(records[name]["log"])))
                if self._ready(comp, health):
                    pending.pop(name)
            if not pending:
                return
            if time.monotonic() > deadline:
                names = ", ".join(f"{n} (log {records[n]['log']})" for n in pending)
                raise PlatformError(f"not ready after {timeout:.0f}s: {names}")
            time.sleep(0.5)

    def up(self, *, timeout: float = 240.0) -> UpResult:
        """Start every component that is not running (ours); wait until all are ready; describe them."""
        with self._locked():
            self.log_dir.mkdir(parents=True, exist_ok=True)
            state = self.state()
            ours = {n: r for n, r in state["components"].items() if is_ours(r)}
            comps = self.components()
            todo = [c for c in comps if c.name not in ours]
            self._check_ports(todo, ours)
            env = self.env()
            result = UpResult(running=[c.name for c in comps if c.name in ours])
            if todo:
                self._migrate(env)
            records = dict(ours)
            try:
                for comp in todo:
                    records[comp.name] = self._start(comp, env)
                    result.started.append(comp.name)
                    state["components"] = records
                    state.update(checkout=self.config.project_root, home=self.config.home, env=self.config.env,
                                 ports={"api_server": self.api_port, "api": self.serve_port,
                                        "redis": self.redis_port if self.local_redis else None},
                                 airflow_home=env["AIRFLOW_HOME"])
                    self._save(state)
                self._wait_ready(todo, records, timeout)
            except BaseException:
                self._stop_records({n: records[n] for n in result.started if n in records})
                state["components"] = {n: r for n, r in records.items() if n not in result.started}
                self._save(state)
                raise
            result.lines = self.describe(env)
            return result

    def login(self, env: dict[str, str] | None = None) -> str:
        """Where the UI login is: user names and their passwords (or the file holding them)."""
        env = env or self.env()
        if env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "").lower() == "true":
            return "no login: AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True"
        if env.get("AIRFLOW__CORE__AUTH_MANAGER", SIMPLE_AUTH) != SIMPLE_AUTH:
            return f"login through the auth manager {env['AIRFLOW__CORE__AUTH_MANAGER']}"
        users, path, passwords = self._simple_auth(env)
        shown = [f"{u} / {passwords[u]}" for u in users if u in passwords]
        if shown:
            return f"login {', '.join(shown)} (passwords file {path})"
        return f"login {', '.join(users)}: password in {path}"

    def _simple_auth(self, env: dict[str, str]) -> tuple[list[str], Path, dict[str, str]]:
        """The simple auth manager's users, its passwords file and the passwords in it (empty if unreadable)."""
        users = [u.split(":")[0] for u in env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin").split(",")
                 if u.strip()]
        path = Path(env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
                    or self.airflow_home(env) / "simple_auth_manager_passwords.json.generated")
        try:
            passwords = json.loads(path.read_text())
        except (OSError, ValueError):
            passwords = {}
        return users, path, passwords if isinstance(passwords, dict) else {}

    def api_auth(self, env: dict[str, str] | None = None) -> dict[str, str]:
        """How a client of this api-server's public REST API logs in (``skyrec watch``):
        ``{"mode": "all_admins"}`` (no credentials), ``{"mode": "password", "username", "password"}`` (the
        simple auth manager's first user with a password) or ``{"mode": "none", "why": ...}``."""
        env = env or self.env()
        if env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "").lower() == "true":
            return {"mode": "all_admins"}
        if env.get("AIRFLOW__CORE__AUTH_MANAGER", SIMPLE_AUTH) != SIMPLE_AUTH:
            return {"mode": "none", "why": f"the auth manager {env['AIRFLOW__CORE__AUTH_MANAGER']} is not the simple "
                                           "one: pass a token in $SKYREC_AIRFLOW_TOKEN"}
        users, path, passwords = self._simple_auth(env)
        for user in users:
            if user in passwords:
                return {"mode": "password", "username": user, "password": str(passwords[user])}
        return {"mode": "none", "why": f"no password for {', '.join(users) or 'any user'} in {path} "
                                       "(the api-server writes it when it starts)"}

    def describe(self, env: dict[str, str] | None = None) -> list[str]:
        env = env or self.env()
        recs = self.running()
        db = env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") or f"sqlite:///{self.airflow_home(env)}/airflow.db"
        db = _redact(db)
        lines = []
        for comp in self.components():
            rec = recs.get(comp.name)
            what = f"pid {rec['pid']}" if rec else "not running"
            lines.append(f"  {comp.name:<14} {what:<12} {comp.url:<28} log {self.log_path(comp.name)}")
        if not self.local_redis:
            lines.append(f"  redis          {self.redis_url} (not on this machine: not started here)")
        lines += [
            f"Airflow UI     {self.ui_url}  ({self.login(env)})",
            f"skyrec API     {self.api_url}/v1/recommendations/<variant>/<user_id>",
            f"metadata DB    {db}, LocalExecutor",
            f"task logs      {self.airflow_home(env) / 'logs'}",
            f"process logs   {self.log_dir}",
            "stop with      make stop  (skyrec down)",
        ]
        return lines

    # ---- down ----------------------------------------------------------------------------------
    def _stop_records(self, records: dict[str, dict[str, Any]], timeout: float = 30.0) -> list[str]:
        out = []
        for name in [n for n in STOP_ORDER if n in records] + [n for n in records if n not in STOP_ORDER]:
            out.append(f"{name}: {stop_process(records[name], timeout=timeout)}")
        return out

    def stop(self, names: list[str] | None = None, *, sig: int = signal.SIGTERM, timeout: float = 30.0) -> list[str]:
        """Stop our components (all, or ``names``); a record whose process is not ours is only forgotten."""
        with self._locked():
            state = self.state()
            recs = state["components"]
            chosen = {n: r for n, r in recs.items() if names is None or n in names}
            out = []
            for name in [n for n in STOP_ORDER if n in chosen] + [n for n in chosen if n not in STOP_ORDER]:
                out.append(f"{name}: {stop_process(chosen[name], sig=sig, timeout=timeout)}")
                recs.pop(name, None)
            self._save(state)
            return out

    def down(self, timeout: float = 30.0) -> list[str]:
        lines = self.stop(timeout=timeout)
        return lines or ["nothing was running (no platform state in " + str(self.run_dir) + ")"]


def stop_process(record: dict[str, Any], *, sig: int = signal.SIGTERM, timeout: float = 30.0) -> str:
    """Signal the process group of a process we started (verified by pid + start time + boot); SIGKILL after
    ``timeout``. Returns what happened."""
    if not is_ours(record):
        return f"not running (pid {record.get('pid')} is gone or no longer ours: left alone)"
    pid = int(record["pid"])
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return "not running"
    target = pgid if pgid == pid else None  # started with its own session: the group is ours too

    def send(s: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if target is not None:
                os.killpg(target, s)
            else:
                os.kill(pid, s)

    send(sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_ours(record) and not _group_alive(target):
            return f"stopped (pid {pid})"
        time.sleep(0.1)
    send(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (is_ours(record) or _group_alive(target)):
        time.sleep(0.05)
    return f"killed after {timeout:.0f}s (pid {pid})"


def _group_alive(pgid: int | None) -> bool:
    return pgid is not None and bool(group_members(pgid))


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _redact(url: str) -> str:
    u = urlparse(url)
    if u.password:
        return url.replace(f":{u.password}@", ":***@")
    return url
