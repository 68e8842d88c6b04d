"""The one ``skyrec`` command. Subcommands import their layer lazily so ``--help`` stays fast."""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Any

import typer

from skyrec.config import ConfigError, load_config

app = typer.Typer(
    name="skyrec",
    help="Batch personalised recommendations orchestrated by Apache Airflow 3.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

def _version(value: bool) -> None:
    if value:
        from skyrec import __version__

        typer.echo(f"skyrec {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    """Batch personalised recommendations orchestrated by Apache Airflow 3."""


EnvOpt = Annotated[str | None, typer.Option("--env", "-e", help="Config environment: local, dev, int, prod "
                                                               "(default: $SKYREC_ENV or local).")]


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"skyrec: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _config(env: str | None) -> Any:
    try:
        return load_config(env)
    except ConfigError as exc:
        _fail(str(exc))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def job(ctx: typer.Context) -> None:
    """Run one heavy step as this process: skyrec job NAME [--param K=V] [--force] [--override GATE] ..."""
    from skyrec.jobs.base import main as job_main

    raise typer.Exit(job_main(list(ctx.args)))


@app.command()
def generate(
    env: EnvOpt = None,
    users: Annotated[int, typer.Option(help="Number of listeners.")] = 2000,
    items: Annotated[int, typer.Option(help="Number of episodes (programmes).")] = 3000,
    days: Annotated[int, typer.Option(help="Days of hourly activity to generate.")] = 21,
    events_per_user: Annotated[float, typer.Option(help="Mean listening events per user over the period.")] = 40.0,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same bytes).")] = 7,
    end: Annotated[str | None, typer.Option(help="Last hour of activity, ISO-8601 UTC (default: now).")] = None,
    bad_rate: Annotated[float, typer.Option(help="Fraction of deliberately malformed raw records.")] = 0.002,
) -> None:
    """Generate a broadcaster-like catalogue and listening activity, landed in raw form in the source."""
    from skyrec.data.generate import generate as gen

    cfg = _config(env)
    summary = gen(cfg, users=users, items=items, days=days, events_per_user=events_per_user, seed=seed,
                  end=end, bad_rate=bad_rate)
    typer.echo(json.dumps(summary, indent=1, default=str))


@app.command("run")
def run_dag(
    dag_id: Annotated[str, typer.Argument(help="DAG id, e.g. ingest_user_activity (see `skyrec dags`).")],
    env: EnvOpt = None,
    logical_date: Annotated[str | None, typer.Option(help="Logical date, ISO-8601 (default: now, hour-aligned).")] = None,
    conf: Annotated[str | None, typer.Option(help="Run conf as JSON, e.g. '{\"overrides\": [\"volume\"]}'.")] = None,
) -> None:
    """Run one DAG through Airflow in-process (dag.test() on the embedded SQLite metadata DB)."""
    from skyrec.airflow.runner import run_dag as runner

    if env:
        os.environ["SKYREC_ENV"] = env
    try:
        run_conf = json.loads(conf) if conf else None
    except json.JSONDecodeError as exc:
        _fail(f"--conf is not valid JSON: {exc}")
    state = runner(dag_id, logical_date=logical_date, conf=run_conf)
    typer.echo(f"{dag_id}: {state}")
    if state != "success":
        raise typer.Exit(1)


@app.command("airflow-env")
def airflow_env_cmd(env: EnvOpt = None) -> None:
    """Print `export` lines that point Airflow at skyrec's DAGs and home: eval "$(skyrec airflow-env)"."""
    import shlex

    from skyrec.airflow.runner import airflow_env

    for key, value in sorted(airflow_env(_config(env)).items()):
        typer.echo(f"export {key}={shlex.quote(str(value))}")


@app.command()
def dags(env: EnvOpt = None) -> None:
    """List the DAG ids this configuration builds."""
    from skyrec.airflow.factory import dag_ids

    for dag_id in dag_ids(_config(env)):
        typer.echo(dag_id)


@app.command()
def serve(
    env: EnvOpt = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default from config serve.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from config serve.port).")] = None,
    start_redis: Annotated[bool, typer.Option("--start-redis", help="Start the local serving redis-server "
                                                                     "(embedded default) if none answers.")] = False,
) -> None:
    """Serve recommendations over HTTP (FastAPI on uvicorn)."""
    from skyrec.serve.main import run as serve_run

    cfg = _config(env)
    if start_redis:
        from skyrec.demo import ensure_serving_redis

        server, started = ensure_serving_redis(cfg)
        typer.echo(f"serving Redis at {server.url} ({'started' if started else 'already running'})", err=True)
    serve_run(cfg, host=host or cfg.serve.host, port=port or cfg.serve.port)


@app.command()
def demo(
    keep_serving: Annotated[bool, typer.Option("--keep-serving", help="Leave the API and Redis running.")] = False,
) -> None:
    """Generate sample data, run every DAG through Airflow, start the API and query it."""
    from skyrec.demo import run_demo

    raise typer.Exit(run_demo(keep_serving=keep_serving))


@app.command()
def gc(
    env: EnvOpt = None,
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be removed; remove nothing."),
    grace_hours: float = typer.Option(None, "--grace-hours", help="Override storage.gc_grace_hours."),
) -> None:
    """Remove staging left by dead attempts (never a committed file, never a live attempt's staging)."""
    from skyrec.storage import Lake

    cfg = _config(env)
    hours = cfg.storage.gc_grace_hours if grace_hours is None else grace_hours
    removed = Lake.from_config(cfg).collect_all(cfg, grace_seconds=hours * 3600.0, dry_run=dry_run)
    for path in removed:
        typer.echo(f"{'would remove' if dry_run else 'removed'} {path}")
    typer.echo(f"{len(removed)} abandoned item(s) {'found' if dry_run else 'removed'} "
               f"(grace {hours:g} h) in {cfg.lake_url}")


@app.command()
def stop(env: EnvOpt = None) -> None:
    """Stop the API and the local serving Redis left running by `make demo KEEP_SERVING=1` / `make serve`."""
    from skyrec.demo import stop_all

    for line in stop_all(_config(env)):
        typer.echo(line)


@app.command()
def status(
    env: EnvOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Last committed output per dataset and its age; the publication served for each variant."""
    from skyrec.status import collect

    info = collect(_config(env))
    if as_json:
        typer.echo(json.dumps(info, indent=1, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()  # as wide as the terminal: long paths fold inside their column, never cut off
    t = Table(title=f"committed outputs in {info['lake']}", expand=False)
    for col in ("dataset", "for", "latest", "age", "rows", "quarantined"):
        t.add_column(col, overflow="fold")
    for d in info["datasets"]:
        scope = " ".join(f"{k}={d[k]}" for k in ("model", "version", "variant") if k in d)
        t.add_row(d["dataset"], scope, d["latest"] or "[red]none[/red]", d["age"], str(d["rows"] or "-"),
                  str(d["quarantined"] if d["quarantined"] is not None else "-"))
    console.print(t)
    m = Table(title="models served: latest evaluation (95% interval)")
    for col in ("model", "version", "model_version", "users", "ndcg_at_k", "recall_at_k", "split", "gate"):
        m.add_column(col, overflow="fold")
    for row in info.get("models", []):
        m.add_row(row["model"], row["version"], row["model_version"] or "[red]none[/red]", str(row["users"] or "-"),
                  row["ndcg_at_k"], row["recall_at_k"], row["split"] or "-", row["gate"] or "-")
    console.print(m)
    errors = [row["error"] for row in info["published"] if "error" in row]
    if errors:
        for error in errors:
            console.print(f"[bold red]warning:[/bold red] {error}: what is published is unknown")
        return
    p = Table(title="published to serving Redis")
    for col in ("variant", "publication", "model_version", "age", "users"):
        p.add_column(col, overflow="fold")
    for row in info["published"]:
        p.add_row(row["variant"], row["publication"] or "[red]none[/red]", row["model_version"] or "-",
                  row["age"], str(row["users"] or "-"))
    console.print(p)


@app.command()
def deploy(
    env: EnvOpt = None,
    target: Annotated[str | None, typer.Option(help="DAG folder target (local path, gs://, s3://); "
                                                     "default from config.")] = None,
) -> None:
    """Build a versioned wheel and sync the DAG folder to its target, deleting stale files."""
    from skyrec.airflow.deploy import deploy as do_deploy

    typer.echo(json.dumps(do_deploy(_config(env), target=target), indent=1, default=str))


@app.command()
def bench(
    scale: Annotated[str, typer.Option(help="small (minutes) or reference (the issue's full figures).")] = "small",
    only: Annotated[list[str] | None, typer.Option(help="Run only these benchmarks (e.g. kernel, serve).")] = None,
) -> None:
    """Run the benchmarks (each against a named peer in the same run); results in .bench/<name>.json."""
    from skyrec.bench import run_all

    raise typer.Exit(run_all(scale=scale, only=only))


def _resolve_home(data: Any, home: str) -> Any:
    if isinstance(data, dict):
        return {k: _resolve_home(v, home) for k, v in data.items()}
    if isinstance(data, list):
        return [_resolve_home(v, home) for v in data]
    return data.replace("{home}", home) if isinstance(data, str) else data


@app.command()
def config(
    env: EnvOpt = None,
    key: Annotated[str | None, typer.Argument(help="Dotted key to print, e.g. variants.music_mixes.")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Show templates as written ({home}/lake), not resolved.")]
    = False,
) -> None:
    """Validate and print the effective configuration (base + env file + SKYREC__ variables), resolved."""
    cfg = _config(env)
    data: Any = cfg.model_dump(mode="json")
    if not raw:
        data = _resolve_home(data, cfg.home)
    if key:
        for part in key.split("."):
            if not isinstance(data, dict) or part not in data:
                _fail(f"config key {key!r} not found")
            data = data[part]
    typer.echo(json.dumps(data, indent=1))


def main() -> None:
    try:
        app()
    except ConfigError as exc:
        typer.secho(f"skyrec: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
