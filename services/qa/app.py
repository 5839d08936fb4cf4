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
    app, r = base_app(
        settings, cache_namespace=CACHE_NAMESPACE, migrations_dir=MIGRATIONS, outbox=True
    )
    # Every route also answers with a trailing slash: front ends send both forms.
    for suffix in ("", "/"):
        r.get("/qa/questions" + suffix, views.list_questions)
        r.post("/qa/questions" + suffix, views.add_question)
        answers = "/qa/questions/{question_id}/answers" + suffix
        r.get(answers, views.list_answers)
        r.post(answers, views.add_answer)
        r.put("/qa/questions/{question_id}/helpful" + suffix, views.mark_question_helpful)
        r.put("/qa/questions/{question_id}/report" + suffix, views.report_question)
        r.put("/qa/answers/{answer_id}/helpful" + suffix, views.mark_answer_helpful)
        r.put("/qa/answers/{answer_id}/report" + suffix, views.report_answer)
    return app


def main() -> None:
    run(create_app, "qa")


if __name__ == "__main__":
    main()
