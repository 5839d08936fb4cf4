"""The serving sessions plan each statement once (db.PLAN_CACHE_MODE): the
reviews page and the questions page, which Postgres's default plan cache mode
re-planned on every execution (decision 0042); and never JIT-compile one
(db.JIT, decision 0050). Here the pool's startup parameters set them; behind
PgBouncer the app role's settings in its database do (migrate.py;
tests/common/test_migrate.py)."""

from __future__ import annotations

import pytest

from services.common.resources import DB
from services.qa.queries import QUESTIONS_PAGE
from services.reviews.queries import PAGE_SQL
from tests.conftest import POOLER_ENABLED

STATEMENTS = {"reviews": PAGE_SQL["helpful"], "qa": QUESTIONS_PAGE}


@pytest.mark.parametrize("service", sorted(STATEMENTS))
async def test_a_serving_session_plans_a_page_once(
    service: str, service_client, reviews_db: str, qa_db: str
) -> None:
    client = await service_client(service, {"reviews": reviews_db, "qa": qa_db}[service])
    sql = STATEMENTS[service]
    async with client.app[DB].connection() as conn:
        assert await conn.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
        if POOLER_ENABLED:
            return  # unnamed statements there (no statement cache): no plan is kept
        for product_id in range(1, 9):  # a page of 5, as the product page asks
            await conn.fetchval(sql, product_id, 5, 0)
        plans = await conn.fetchrow(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1",
            sql,
        )
    # Under "auto" the first five executions alone are five custom plans.
    assert tuple(plans) == (8, 0)


# A plan whose estimated cost is far past jit_above_cost (100,000 by default).
COSTLY = (
    "EXPLAIN SELECT sum(a.x) FROM generate_series(1, 100000000) a(x), generate_series(1, 1000) b"
)


@pytest.mark.parametrize("service", sorted(STATEMENTS))
async def test_a_serving_session_never_compiles_a_plan(
    service: str, service_client, reviews_db: str, qa_db: str
) -> None:
    client = await service_client(service, {"reviews": reviews_db, "qa": qa_db}[service])
    async with client.app[DB].connection() as conn:
        plan = "\n".join(r[0] for r in await conn.fetch(COSTLY))
        assert "JIT:" not in plan, plan
        async with conn.transaction():  # the same server's default would compile it
            await conn.execute("SET LOCAL jit = on")
            assert "JIT:" in "\n".join(r[0] for r in await conn.fetch(COSTLY))
