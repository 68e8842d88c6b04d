"""One router per resource; ``main.create_app`` includes them all."""

from __future__ import annotations

from skyrec.serve.api.routes import admin, explorer, health, items, recommendations, users, variants

ROUTERS = [recommendations.router, variants.router, items.router, users.router, health.router, admin.router,
           explorer.router]
