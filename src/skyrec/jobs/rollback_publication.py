"""Job ``rollback_publication`` (param ``variant``): serve the previous publication again, atomically.

The same core function the API's admin endpoint calls (``skyrec.publish.rollback``); the lake pointer
``pointers/published/<variant>.json`` follows the switch.
"""

from __future__ import annotations

from typing import Any

from skyrec.jobs.base import BadInput, JobContext


def run(ctx: JobContext) -> dict[str, Any]:
    from skyrec.jobs.publish_predictions import serving_client
    from skyrec.models.artefact import published_predictions_pointer
    from skyrec.publish.keys import Keys
    from skyrec.publish.publisher import rollback

    variant = ctx.param("variant")
    ctx.config.variant(variant)
    client = serving_client(ctx)
    try:
        try:
            result = rollback(client, Keys(ctx.config.publish.key_prefix), variant)
        except LookupError as exc:
            raise BadInput(str(exc)) from None
    finally:
        client.close()
    target = result["pointer"].get("predictions")
    if target and ctx.lake.committed(target):
        ctx.lake.write_pointer(published_predictions_pointer(variant),
                               {"path": target, "publication": result["to"], "variant": variant,
                                "rolled_back_from": result["from"]})
    return {"outputs": [target] if target else [], "from": result["from"], "to": result["to"]}
