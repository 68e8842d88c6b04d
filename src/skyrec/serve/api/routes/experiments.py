"""``GET /v1/experiments`` (what runs, the latest readout's decision) and each experiment's readout report.

The report is the HTML page ``evaluate_experiments`` committed with its latest readout
(``datasets.experiment_readout``), read through the committed manifest -- never a file of an attempt that
did not commit, and only when its bytes are the ones that manifest records (``skyrec.serve.api.reports``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse

from skyrec.config import Config
from skyrec.serve.api.errors import ApiError
from skyrec.serve.api.reports import CORRUPT_RESPONSE, MAX_REPORT_BYTES, read_committed_report
from skyrec.serve.api.responses import JSON
from skyrec.serve.api.schemas import ErrorOut

router = APIRouter(prefix="/v1", tags=["experiments"])
EXPERIMENT_PATTERN = r"^[a-z0-9_]{1,64}$"
READOUT_FILE, REPORT_FILE = "readout.json", "report.html"
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "unknown experiment, no readout committed yet, or (the report) larger "
                                            f"than the {MAX_REPORT_BYTES} bytes the API serves"},
    422: {"model": ErrorOut, "description": "invalid parameter (the message names it)"},
}
ExperimentName = Annotated[str, Path(pattern=EXPERIMENT_PATTERN, max_length=64,
                                     description="a configured experiment")]


class ArmOut(BaseModel):
    variant: str
    share: float


class ReadoutOut(BaseModel):
    run: str = Field(description="the readout's run key")
    committed_at: str | None = None
    decision: dict[str, Any] | None = Field(None, description="status (treatment_better, no_difference_yet, "
                                            "treatment_worse, guardrail_breached, invalid_srm) and message")
    srm_mismatch: bool | None = None
    users: dict[str, int] | None = None
    report_url: str


class ExperimentOut(BaseModel):
    name: str
    rail: str
    start: str
    end: str
    default_arm: str
    primary_metric: str
    arms: dict[str, ArmOut]
    latest_readout: ReadoutOut | None = Field(None, description="null until evaluate_experiments committed one")


class ExperimentsOut(BaseModel):
    experiments: list[ExperimentOut]


@dataclass(frozen=True)
class Readouts:
    """What the routes need: the configured experiments, where their readouts are, the lake."""

    experiments: dict[str, Any]
    template: str | None
    lake_url: str
    lake_options: dict[str, Any]

    def prefix(self, name: str) -> str | None:
        if not self.template or "{run_key}" not in self.template:
            return None
        head = self.template.split("{run_key}", 1)[0].replace("{experiment}", name)
        return head.rsplit("/", 1)[0] + "/" if "/" in head else ""

    def latest(self, name: str) -> Any:
        """The manifest of the newest committed readout of ``name`` (or None)."""
        from skyrec.storage import Lake

        prefix = self.prefix(name)
        if prefix is None:
            return None, None
        lake = Lake(self.lake_url, self.lake_options)
        versions = lake.versions(prefix)
        return lake, (lake.manifest(versions[-1]) if versions else None)


def install(app: FastAPI, config: Config) -> None:
    app.state.readouts = Readouts(experiments=dict(getattr(config, "experiments", None) or {}),
                                  template=config.datasets.get("experiment_readout"), lake_url=config.lake_url,
                                  lake_options=dict(config.storage.storage_options))


def _readouts(request: Request) -> Readouts:
    readouts: Readouts | None = getattr(request.app.state, "readouts", None)
    if readouts is None:  # an app built without install(): no experiments
        return Readouts({}, None, "", {})
    return readouts


def _describe(name: str, exp: Any, manifest: Any) -> dict[str, Any]:
    latest = None
    if manifest is not None:
        meta = manifest.meta
        latest = {"run": manifest.key.split("=", 1)[-1], "committed_at": manifest.committed_at,
                  "decision": meta.get("decision"), "srm_mismatch": (meta.get("srm") or {}).get("mismatch"),
                  "users": meta.get("users"), "report_url": f"/v1/experiments/{name}/report"}
    return {"name": name, "rail": exp.rail, "start": exp.start.isoformat(), "end": exp.end.isoformat(),
            "default_arm": exp.default_arm, "primary_metric": exp.primary_metric,
            "arms": {a: {"variant": s.variant, "share": s.share} for a, s in exp.arms.items()},
            "latest_readout": latest}


@router.get("/experiments", response_model=ExperimentsOut, responses=ERRORS,
            summary="Configured experiments and their latest readout")
async def experiments(request: Request) -> JSON:
    readouts = _readouts(request)

    def read() -> list[dict[str, Any]]:
        return [_describe(name, exp, readouts.latest(name)[1]) for name, exp in sorted(readouts.experiments.items())]

    return JSON({"experiments": await run_in_threadpool(read)})


@router.get("/experiments/{name}/report", response_class=HTMLResponse, responses={**ERRORS, **CORRUPT_RESPONSE},
            summary="The latest readout report of an experiment (HTML, self-contained)")
async def report(name: ExperimentName, request: Request) -> HTMLResponse:
    """Served only when its bytes are the ones the readout's committed manifest records (size and sha256): 409
    ``report_corrupt`` otherwise, never altered content."""
    readouts = _readouts(request)
    if name not in readouts.experiments:
        raise ApiError(404, "unknown_experiment",
                       f"unknown experiment {name!r} (configured: {sorted(readouts.experiments)})")

    def read() -> bytes | None:
        lake, manifest = readouts.latest(name)
        if manifest is None:
            return None
        try:
            return read_committed_report(lake, manifest, REPORT_FILE,
                                         f"readout report of experiment {name!r} ({manifest.path})")
        except (FileNotFoundError, KeyError):
            return None

    data = await run_in_threadpool(read)
    if data is None:
        raise ApiError(404, "no_readout", f"experiment {name!r} has no committed readout yet "
                                          "(the evaluate_experiments DAG writes one daily)")
    return HTMLResponse(data, headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                                                  "img-src data:"})


def readout_json(readouts: Readouts, name: str) -> dict[str, Any] | None:
    """The latest readout's figures (for tools; the report is the page for people)."""
    lake, manifest = readouts.latest(name)
    if manifest is None:
        return None
    with lake.open(manifest, READOUT_FILE) as fh:
        out: dict[str, Any] = json.loads(fh.read())
        return out
