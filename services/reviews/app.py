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
    app, r = base_app(
        settings, cache_namespace=CACHE_NAMESPACE, migrations_dir=MIGRATIONS, outbox=True
    )
    for path in ("/reviews", "/reviews/"):
        r.get(path, views.list_reviews)
        r.post(path, views.add_review)
    for path in ("/reviews/meta", "/reviews/meta/"):
        r.get(path, views.review_meta)
    for suffix in ("", "/"):
        r.put("/reviews/{review_id}/helpful" + suffix, views.mark_helpful)
        r.put("/reviews/{review_id}/report" + suffix, views.report)
    return app


def main() -> None:
    run(create_app, "reviews")


if __name__ == "__main__":
    main()
