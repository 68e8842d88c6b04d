"""HTML reports served from committed lake outputs: the served model's training report
(``/v1/variants/{variant}/report``) and an experiment's readout report (``/v1/experiments/{name}/report``).

A committed output's manifest records each file's size and sha256; a report is served only when its bytes are
those (a file changed since the commit, tampered with or half-written over, is a 409 ``report_corrupt``, never
altered content), and only up to ``MAX_REPORT_BYTES`` (a larger one is a 404 saying so).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from skyrec.serve.api.errors import ApiError
from skyrec.serve.api.schemas import ErrorOut

if TYPE_CHECKING:
    from skyrec.storage import Lake, Manifest

MAX_REPORT_BYTES = 20 * 1024 * 1024

CORRUPT_RESPONSE: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorOut, "description": "the report in the lake does not match the checksum its committed "
                                            "manifest records (report_corrupt)"},
}


def read_committed_report(lake: Lake, manifest: Manifest, name: str, what: str) -> bytes:
    """The bytes of file ``name`` of the committed output ``manifest``, checked against the size and sha256 the
    manifest records. ``what`` names the report in the error messages (e.g. ``training report 'evaluation/…'``).

    Raises ``ApiError`` 404 ``no_report`` when the manifest records more than ``MAX_REPORT_BYTES``, ``ApiError``
    409 ``report_corrupt`` when the bytes are not the recorded ones; ``KeyError`` (the manifest lists no such
    file) and the ``OSError`` of a file that cannot be read propagate (the caller's 404)."""
    entry = manifest.file(name)
    if entry.size > MAX_REPORT_BYTES:
        raise ApiError(404, "no_report", f"{what} is {entry.size} bytes, more than the {MAX_REPORT_BYTES} the API "
                                         "serves")
    with lake.open(manifest, name) as fh:
        data: bytes = fh.read(entry.size + 1)  # one more: a file grown since the commit is caught, not cut
    if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
        raise ApiError(409, "report_corrupt", f"{what} in the lake does not match the size and sha256 its "
                                              "committed manifest records: not served")
    return data
