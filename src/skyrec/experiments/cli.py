"""``skyrec experiment status|stop|promote|revert``: decisions on experiments (docs/experiments.md, "Decisions").

Decisions are recorded in the serving Redis (``serve.redis_url``) and audited under the state dir; the API picks
them up within ``serve.pointer_cache_seconds``. No config file is edited.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

app = typer.Typer(help="Online experiments: status, and decisions (stop, promote an arm, revert) that the API "
                       "applies at once, recorded and reversible.", no_args_is_help=True)

EnvOpt = Annotated[str | None, typer.Option("--env", "-e", help="Config environment (default: $SKYREC_ENV or local).")]
ReasonOpt = Annotated[str | None, typer.Option("--reason", "-m", help="Why (kept in the record and the audit).")]
ByOpt = Annotated[str | None, typer.Option("--by", help="Who decides (default: user@host).")]


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"skyrec: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _setup(env: str | None) -> tuple[Any, Any]:
    import redis

    from skyrec.config import ConfigError, load_config

    try:
        config = load_config(env)
    except ConfigError as exc:
        _fail(str(exc))
    client = redis.Redis.from_url(config.serve.redis_url, socket_timeout=5, socket_connect_timeout=5)
    return config, client


def _decide(env: str | None, name: str, action: str, arm: str | None, by: str | None, reason: str | None) -> None:
    import redis

    from skyrec.experiments.control import DecisionError, audit_path, decide

    config, client = _setup(env)
    try:
        entry = decide(config, client, name, action, arm, by=by, reason=reason)
    except DecisionError as exc:
        _fail(str(exc), 1)
    except redis.RedisError as exc:
        _fail(f"serving Redis {config.serve.redis_url} unreachable ({type(exc).__name__}: {exc}); nothing changed")
    finally:
        client.close()
    after = entry["after"]
    now = (f"serving arm {after['arm']} ({'promoted' if after['action'] == 'promote' else 'stopped: default arm'}) "
           "to everyone on the rail") if after else "as configured"
    typer.echo(f"{name}: {action} recorded (#{entry['seq']} by {entry['by']} at {entry['at']}); now {now}. "
               f"The API applies it within serve.pointer_cache_seconds. Audit: {audit_path(config)}")


@app.command("status")
def status_cmd(
    name: Annotated[str, typer.Argument(help="Experiment name (a key of experiments: in the config).")],
    env: EnvOpt = None,
    sample: Annotated[int, typer.Option(help="Synthetic user ids to count assignments over.", min=100)] = 10_000,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """The experiment's config, the decision in force, recent decisions, assignment counts over a sample."""
    import redis

    from skyrec.experiments.control import DecisionError, status

    config, client = _setup(env)
    try:
        out = status(config, client, name, sample=sample)
    except DecisionError as exc:
        _fail(str(exc), 1)
    except redis.RedisError as exc:
        typer.secho(f"serving Redis {config.serve.redis_url} unreachable ({type(exc).__name__}): decisions unknown, "
                    "showing the configuration only", fg=typer.colors.YELLOW, err=True)
        out = status(config, None, name, sample=sample)
        out["decision"] = "unknown (Redis unreachable)"
    finally:
        client.close()
    if as_json:
        typer.echo(json.dumps(out, indent=1, default=str))
        return
    cfg = out["config"]
    typer.echo(f"{name}: {out['phase']} on rail {cfg['rail']} ({cfg['start']} .. {cfg['end']}), traffic "
               f"{cfg['traffic']:.0%}, default arm {cfg['default_arm']}, salt {cfg['salt']!r}")
    for arm, spec in cfg["arms"].items():
        typer.echo(f"  arm {arm:<16} variant {spec['variant']:<32} share {spec['share']:.3f}")
    typer.echo(f"  primary metric {cfg['primary_metric']}; guardrails {cfg['guardrails'] or 'none'}; "
               f"alpha {cfg['alpha']}")
    decision = out["decision"]
    if isinstance(decision, dict):
        typer.echo(f"decision in force: {decision['action']} arm {decision['arm']} (#{decision['seq']} by "
                   f"{decision['by']} at {decision['at']}{'; ' + decision['reason'] if decision.get('reason') else ''})")
    else:
        typer.echo(f"decision in force: {decision or 'none (as configured)'}")
    for h in out["history"]:
        typer.echo(f"  #{h['seq']} {h['at']} {h['by']}: {h['action']} {h['arm'] or ''}"
                   f"{' (reverted by #' + str(h['reverted_by']) + ')' if h.get('reverted_by') else ''}")
    typer.echo(f"assignment over {out['sample']:,} sample ids, served now:")
    for label, n in out["served_now"].items():
        typer.echo(f"  {label:<60} {n:>7,}")
    typer.echo("split while live (expected):")
    for arm, n in out["split_while_live"].items():
        typer.echo(f"  {arm:<20} {n:>7,} ({out['expected_while_live'].get(arm, '-')})")
    if "stream" in out:
        s = out["stream"]
        typer.echo(f"events stream {s['key']}: {s['length']:,} entries, backlog {s['backlog']:,} "
                   f"(limit {config.events.max_backlog:,})")


@app.command("stop")
def stop_cmd(name: Annotated[str, typer.Argument(help="Experiment name.")], env: EnvOpt = None,
             reason: ReasonOpt = None, by: ByOpt = None) -> None:
    """Stop an experiment: everyone gets its default arm from now on (revert to resume)."""
    _decide(env, name, "stop", None, by, reason)


@app.command("promote")
def promote_cmd(name: Annotated[str, typer.Argument(help="Experiment name.")],
                arm: Annotated[str, typer.Argument(help="The arm whose variant becomes the rail's default.")],
                env: EnvOpt = None, reason: ReasonOpt = None, by: ByOpt = None) -> None:
    """Promote an arm: its variant is served on the rail to everyone, after the experiment's end too."""
    _decide(env, name, "promote", arm, by, reason)


@app.command("revert")
def revert_cmd(name: Annotated[str, typer.Argument(help="Experiment name.")], env: EnvOpt = None,
               reason: ReasonOpt = None, by: ByOpt = None) -> None:
    """Undo the latest decision on the experiment not reverted yet (repeat to walk further back)."""
    _decide(env, name, "revert", None, by, reason)
