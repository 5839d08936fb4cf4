"""The overview service's app factory and its routes, in one place."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from services.common.app import base_app, run
from services.common.settings import Settings

from . import views

MIGRATIONS = Path(__file__).parent / "migrations"
CACHE_NAMESPACE = "overview"


def create_app(settings: Settings) -> web.Application:
    app, r = base_app(settings, cache_namespace=CACHE_NAMESPACE, migrations_dir=MIGRATIONS)
    # Trailing slashes are accepted everywhere here: harmless, and front ends vary.
    for suffix in ("", "/"):
        r.get("/products" + suffix, views.list_products)
        r.get("/products/{product_id}" + suffix, views.product_detail)
        r.get("/products/{product_id}/styles" + suffix, views.product_styles)
        r.get("/products/{product_id}/related" + suffix, views.product_related, allow_head=False)
        r.get("/cart" + suffix, views.get_cart)
        r.post("/cart" + suffix, views.add_to_cart)
        r.post("/interactions" + suffix, views.add_interaction)
    return app


def main() -> None:
    run(create_app, "overview")


if __name__ == "__main__":
    main()
