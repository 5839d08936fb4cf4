"""The reviews service's app factory and its routes, in one place."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from services.common.app import base_app, run
from services.common.settings import Settings

from . import views

MIGRATIONS = Path(__file__).parent / "migrations"
CACHE_NAMESPACE = "reviews"


def create_app(settings: Settings) -> web.Application:
    app = base_app(settings, cache_namespace=CACHE_NAMESPACE, migrations_dir=MIGRATIONS)
    r = app.router
    for path in ("/reviews", "/reviews/"):
        r.add_get(path, views.list_reviews, allow_head=False)
        r.add_post(path, views.add_review)
    for path in ("/reviews/meta", "/reviews/meta/"):
        r.add_get(path, views.review_meta, allow_head=False)
    for suffix in ("", "/"):
        r.add_put("/reviews/{review_id}/helpful" + suffix, views.mark_helpful)
        r.add_put("/reviews/{review_id}/report" + suffix, views.report)
    return app


def main() -> None:
    run(create_app, "reviews")


if __name__ == "__main__":
    main()
