"""Cart sessions, the stock rule under real concurrency, and interactions."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from http.cookies import SimpleCookie

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from services.overview.app import create_app


async def add_sku(conn, sku_id: int, quantity: int) -> None:
    await conn.execute(
        "INSERT INTO skus (id, style_id, size, quantity) VALUES ($1, 1, 'M', $2)",
        sku_id,
        quantity,
    )


def header(session: str) -> dict[str, str]:
    return {"X-Session-Id": session}


async def cart(client: TestClient, session: str) -> list[dict]:
    resp = await client.get("/cart", headers=header(session))
    assert resp.status == 200
    assert "Set-Cookie" not in resp.headers  # the caller has a session
    return await resp.json()


async def test_first_use_sets_a_session_cookie_that_keeps_the_cart(overview_client, overview_conn):
    await add_sku(overview_conn, 37, 8)
    overview_client.session.cookie_jar.clear()
    resp = await overview_client.get("/cart")
    assert resp.status == 200 and await resp.json() == []
    raw = resp.headers["Set-Cookie"]
    cookie = SimpleCookie(raw)["session_id"]
    assert len(cookie.value) >= 16
    assert cookie["httponly"] is True and cookie["path"] == "/"
    assert cookie["samesite"].lower() == "lax"
    # The client's cookie jar sends it back: the cart follows the cookie.
    resp = await overview_client.post("/cart", json={"sku_id": 37})
    assert resp.status == 201
    assert "Set-Cookie" not in resp.headers
    resp = await overview_client.post("/cart", json={"sku_id": 37})
    assert resp.status == 201
    resp = await overview_client.get("/cart")
    assert await resp.json() == [{"sku_id": 37, "count": 2}]
    assert await cart(overview_client, cookie.value) == [{"sku_id": 37, "count": 2}]


async def test_post_without_session_starts_one(overview_client, overview_conn):
    await add_sku(overview_conn, 5, 3)
    overview_client.session.cookie_jar.clear()
    resp = await overview_client.post("/cart?sku_id=5")
    assert resp.status == 201
    session = SimpleCookie(resp.headers["Set-Cookie"])["session_id"].value
    assert await cart(overview_client, session) == [{"sku_id": 5, "count": 1}]


async def test_header_sessions_are_separate_and_ordered_by_sku(overview_client, overview_conn):
    for sku_id in (3, 1, 2):
        await add_sku(overview_conn, sku_id, 5)
    for sku_id in (3, 1, 3):
        resp = await overview_client.post("/cart", json={"sku_id": sku_id}, headers=header("a"))
        assert resp.status == 201
    resp = await overview_client.post("/cart?sku_id=2", headers=header("b"))
    assert resp.status == 201
    assert await cart(overview_client, "a") == [
        {"sku_id": 1, "count": 1},
        {"sku_id": 3, "count": 2},
    ]
    assert await cart(overview_client, "b") == [{"sku_id": 2, "count": 1}]
    assert await cart(overview_client, "nobody") == []


@pytest.mark.parametrize(
    "send",
    [
        {"json": {"sku_id": 9}},
        {"json": {"sku_id": "9"}},
        {"params": {"sku_id": "9"}},
        {"params": {"sku_id": "9"}, "json": {}},
        {"params": {"sku_id": "9"}, "data": b""},
    ],
)
async def test_sku_id_in_body_or_query(overview_client, overview_conn, send):
    await add_sku(overview_conn, 9, 1)
    resp = await overview_client.post("/cart", headers=header("s"), **send)
    assert resp.status == 201, await resp.text()
    assert await cart(overview_client, "s") == [{"sku_id": 9, "count": 1}]


async def test_unknown_sku_is_404(overview_client, overview_conn):
    await add_sku(overview_conn, 1, 1)
    for send in ({"json": {"sku_id": 2}}, {"params": {"sku_id": "2147483647"}}):
        resp = await overview_client.post("/cart", headers=header("s"), **send)
        assert resp.status == 404
        assert "sku_id" in (await resp.json())["error"]
    assert await cart(overview_client, "s") == []


async def test_cart_never_holds_more_than_the_stock(overview_client, overview_conn):
    await add_sku(overview_conn, 1, 2)
    await add_sku(overview_conn, 2, 0)
    for expected in (201, 201, 422, 422):
        resp = await overview_client.post("/cart", json={"sku_id": 1}, headers=header("a"))
        assert resp.status == expected
    body = await resp.json()
    assert "sku_id" in body["error"]
    resp = await overview_client.post("/cart", json={"sku_id": 2}, headers=header("a"))
    assert resp.status == 422  # out of stock: no row at all
    assert await cart(overview_client, "a") == [{"sku_id": 1, "count": 2}]
    # A cart reserves nothing across sessions.
    resp = await overview_client.post("/cart", json={"sku_id": 1}, headers=header("b"))
    assert resp.status == 201


@pytest.mark.parametrize("quantity", [1, 3])
async def test_concurrent_adds_of_the_last_units(
    aiohttp_client, overview_db, overview_conn, redis_server, make_settings, quantity
):
    """Many simultaneous adds from one session, each on its own pooled connection:
    exactly `quantity` win, the rest get 422. Covers both races: the first insert
    (no cart row yet) and the increment (row exists)."""
    await overview_conn.execute("TRUNCATE skus, cart_items")
    skus = list(range(1, 11))
    for sku_id in skus:
        await add_sku(overview_conn, sku_id, quantity)
    adds = quantity + 4
    settings = replace(make_settings("overview", overview_db), pool_min=adds, pool_max=adds)
    app = create_app(settings)
    client = await aiohttp_client(app)
    for sku_id in skus:
        # Block every add on a table lock until all of them are waiting inside
        # Postgres, then release them together.
        async with overview_conn.transaction():
            await overview_conn.execute("LOCK TABLE cart_items IN EXCLUSIVE MODE")
            posts = [
                asyncio.ensure_future(
                    client.post("/cart", json={"sku_id": sku_id}, headers=header("race"))
                )
                for _ in range(adds)
            ]
            for _ in range(500):
                # pg_stat_activity is read once per transaction unless cleared.
                await overview_conn.execute("SELECT pg_stat_clear_snapshot()")
                waiting = await overview_conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND application_name = 'runway-overview'"
                )
                if waiting == adds:
                    break
                await asyncio.sleep(0.01)
            assert waiting == adds
        statuses = sorted([(await p).status for p in posts])
        assert statuses == [201] * quantity + [422] * (adds - quantity), sku_id
    rows = await overview_conn.fetch("SELECT sku_id, count FROM cart_items ORDER BY sku_id")
    assert [(r[0], r[1]) for r in rows] == [(s, quantity) for s in skus]


@pytest.mark.parametrize(
    ("send", "status", "field"),
    [
        ({}, 422, "sku_id"),
        ({"json": {}}, 422, "sku_id"),
        ({"json": {"sku_id": 0}}, 422, "sku_id"),
        ({"json": {"sku_id": "abc"}}, 422, "sku_id"),
        ({"json": {"sku_id": 1.5}}, 422, "sku_id"),
        ({"json": {"sku_id": True}}, 422, "sku_id"),
        ({"json": {"sku_id": "2147483648"}}, 422, "sku_id"),
        ({"params": {"sku_id": "abc"}}, 400, "sku_id"),
        ({"params": {"sku_id": "0"}}, 400, "sku_id"),
        # A valid body does not excuse a malformed query (schemathesis found it).
        ({"params": {"sku_id": "abc"}, "json": {"sku_id": 1}}, 400, "sku_id"),
        ({"data": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, "body"),
    ],
)
async def test_invalid_sku_id(overview_client, send, status, field):
    resp = await overview_client.post("/cart", **send)
    assert resp.status == status
    assert field in (await resp.json())["error"]


@pytest.mark.parametrize("bad", ["", "a b", "x" * 129, "semi;colon", "ü"])
async def test_malformed_session_header_is_400(overview_client, bad):
    resp = await overview_client.get("/cart", headers={"X-Session-Id": bad.encode().decode()})
    assert resp.status == 400
    assert "X-Session-Id" in (await resp.json())["error"]


async def test_cart_is_never_served_from_cache(overview_client, overview_conn):
    await add_sku(overview_conn, 1, 5)
    assert await cart(overview_client, "c") == []
    await overview_conn.execute("INSERT INTO cart_items VALUES ('c', 1, 4)")
    assert await cart(overview_client, "c") == [{"sku_id": 1, "count": 4}]


# --- POST /interactions ---------------------------------------------------------

EVENT = {"element": "img.thumbnail", "widget": "Overview", "time": "2021-08-02T10:00:00Z"}


async def test_interaction_is_stored_before_201(overview_client, overview_db):
    resp = await overview_client.post("/interactions", json=EVENT, headers=header("u1"))
    assert resp.status == 201
    conn = await asyncpg.connect(overview_db)  # another session sees it: committed
    try:
        row = await conn.fetchrow("SELECT element, widget, time, session_id FROM interactions")
    finally:
        await conn.close()
    assert tuple(row) == (EVENT["element"], EVENT["widget"], EVENT["time"], "u1")


async def test_acknowledged_interactions_survive_a_clean_shutdown(
    aiohttp_client, overview_db, overview_conn, make_settings
):
    await overview_conn.execute("TRUNCATE interactions")
    client = await aiohttp_client(create_app(make_settings("overview", overview_db)))
    results = await asyncio.gather(
        *(client.post("/interactions", json={**EVENT, "element": f"e{i}"}) for i in range(50))
    )
    acknowledged = {f"e{i}" for i, r in enumerate(results) if r.status == 201}
    await client.close()  # app cleanup: pool closed
    stored = {r[0] for r in await overview_conn.fetch("SELECT element FROM interactions")}
    assert acknowledged == stored and len(stored) == 50


@pytest.mark.parametrize("field", ["element", "widget", "time"])
@pytest.mark.parametrize("value", ["missing", 1, None, ["x"], {"a": 1}, True, "nul\x00"])
async def test_interaction_field_missing_or_not_a_string_is_422(
    overview_client, overview_conn, field, value
):
    body = dict(EVENT)
    if value == "missing":
        del body[field]
    else:
        body[field] = value
    resp = await overview_client.post("/interactions", json=body)
    assert resp.status == 422
    assert field in (await resp.json())["error"]
    assert await overview_conn.fetchval("SELECT count(*) FROM interactions") == 0


@pytest.mark.parametrize("raw", [b"", b"{oops", b"[]", b"null"])
async def test_interaction_unusable_body_is_json_4xx(overview_client, raw):
    resp = await overview_client.post(
        "/interactions", data=raw, headers={"Content-Type": "application/json"}
    )
    assert resp.status in (400, 422)
    assert list(await resp.json()) == ["error"]


async def test_interaction_empty_strings_and_bad_cookie_are_accepted(overview_client):
    resp = await overview_client.post(
        "/interactions",
        json={"element": "", "widget": "", "time": ""},
        headers={"Cookie": "session_id=has space"},
    )
    assert resp.status == 201
