"""The HTTP API over the publications in Redis (FastAPI on uvicorn), and the explorer page at ``/``.

``skyrec serve`` calls :func:`skyrec.serve.main.run`; tests build the app with
:func:`skyrec.serve.main.create_app`. Layout: ``main`` (app factory, uvicorn), ``settings`` (the ``serve:``
config section), ``store`` (consistent reads of one publication, caches, outage behaviour), ``fastget`` (the
hot path's pipelined GET), ``observability`` (request ids, JSON logs, Prometheus), ``api/`` (dependencies,
schemas, error handlers, routers), ``static/`` (the explorer page, no build step).
"""
