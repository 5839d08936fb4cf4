"""The qa service's app factory and its routes, in one place."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from services.common.app import base_app, run
from services.common.settings import Settings

from . import views

MIGRATIONS = Path(__file__).parent / "migrations"
CACHE_NAMESPACE = "qa"


def create_app(settings: Settings) -> web.Application:
    app = base_app(settings, cache_namespace=CACHE_NAMESPACE, migrations_dir=MIGRATIONS)
    r = app.router
    # Every route also answers with a trailing slash: front ends send both forms.
    for suffix in ("", "/"):
        r.add_get("/qa/questions" + suffix, views.list_questions, allow_head=False)
        r.add_post("/qa/questions" + suffix, views.add_question)
        answers = "/qa/questions/{question_id}/answers" + suffix
        r.add_get(answers, views.list_answers, allow_head=False)
        r.add_post(answers, views.add_answer)
        r.add_put("/qa/questions/{question_id}/helpful" + suffix, views.mark_question_helpful)
        r.add_put("/qa/questions/{question_id}/report" + suffix, views.report_question)
        r.add_put("/qa/answers/{answer_id}/helpful" + suffix, views.mark_answer_helpful)
        r.add_put("/qa/answers/{answer_id}/report" + suffix, views.report_answer)
    return app


def main() -> None:
    run(create_app, "qa")


if __name__ == "__main__":
    main()
