"""One router per resource; ``main.create_app`` includes them all."""

from __future__ import annotations

from skyrec.serve.api.routes import admin, explorer, health, items, recommendations, similar, users, variants
from skyrec.serve.api.routes import events as events_route
from skyrec.serve.api.routes import experiments as experiments_route

ROUTERS = [recommendations.router, variants.router, items.router, users.router, health.router, admin.router,
           explorer.router, similar.router]
ROUTERS.append(events_route.router)  # POST /v1/events (skyrec.experiments)
ROUTERS.append(experiments_route.router)  # GET /v1/experiments, readout reports (evaluate_experiments)
