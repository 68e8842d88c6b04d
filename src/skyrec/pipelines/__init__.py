"""Apache Beam pipelines. Runner options come from config, or from the Beam launcher that started the job.

A job started by a Beam launcher (``BeamHook`` on the Dataflow, Flink or Spark backend: ``python -m
skyrec.jobs.base <job args> --runner=... <pipeline options>``) records those options in
``SKYREC_BEAM_OPTIONS``; :func:`launcher_options` returns them, and the pipelines run with them, so the
cluster job carries the name, runner and pinned settings the backend looks up and reads back.
"""

from __future__ import annotations

import json
import os

BEAM_OPTIONS_ENV = "SKYREC_BEAM_OPTIONS"


def launcher_options() -> list[str] | None:
    """The pipeline options the Beam launcher passed to this job process, or None when not launched so."""
    raw = os.environ.get(BEAM_OPTIONS_ENV)
    if not raw:
        return None
    args = json.loads(raw)
    return [str(a) for a in args] if isinstance(args, list) else None
