"""Contract tests for the product routes, against real Postgres and Redis."""

from __future__ import annotations

import json

import pytest

from services.common.cache import flush_namespace
from services.common.resources import CACHE
from services.overview import queries
from services.overview.app import CACHE_NAMESPACE
from services.overview.data.loader import build_documents

PRODUCT_KEYS = ["id", "name", "slogan", "description", "category", "default_price"]
STYLE_KEYS = ["style_id", "name", "original_price", "sale_price", "default?", "photos", "skus"]


async def add_product(conn, product_id: int, price: int = 140, **fields) -> None:
    await conn.execute(
        "INSERT INTO products (id, seq, name, slogan, description, category, default_price)"
        " VALUES ($1, -$1::integer, $2, $3, $4, $5, $6)",
        product_id,
        fields.get("name", f"Product {product_id}"),
        fields.get("slogan", "Blend in to your crowd"),
        fields.get("description", 'A "quoted", multi-line\ndescription'),
        fields.get("category", "Jackets"),
        price,
    )


async def renumber(conn) -> None:
    """Give products their dense rank by id, as the loader does (two steps: seq is unique)."""
    await conn.execute(
        "UPDATE products p SET seq = -r.rn FROM"
        " (SELECT id, row_number() OVER (ORDER BY id) AS rn FROM products) r WHERE p.id = r.id"
    )
    await conn.execute("UPDATE products SET seq = -seq")


async def add_style(conn, style_id: int, product_id: int, *, sale=None, default=True) -> None:
    await conn.execute(
        "INSERT INTO styles (id, product_id, name, sale_price, original_price, default_style)"
        " VALUES ($1, $2, $3, $4, 140, $5)",
        style_id,
        product_id,
        f"Style {style_id}",
        sale,
        default,
    )


async def add_photo(conn, photo_id: int, style_id: int, url: str | None, thumb: str | None):
    await conn.execute(
        "INSERT INTO photos (id, style_id, url, thumbnail_url) VALUES ($1, $2, $3, $4)",
        photo_id,
        style_id,
        url,
        thumb,
    )


async def add_sku(conn, sku_id: int, style_id: int, size: str, quantity: int) -> None:
    await conn.execute(
        "INSERT INTO skus (id, style_id, size, quantity) VALUES ($1, $2, $3, $4)",
        sku_id,
        style_id,
        size,
        quantity,
    )


async def get_json(client, path: str, status: int = 200):
    resp = await client.get(path)
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    return await resp.json()


# --- GET /products ------------------------------------------------------------


async def test_list_shape_types_and_order_by_id(overview_client, overview_conn):
    for product_id in (9, 2, 5, 1000):  # inserted out of order, with gaps
        await add_product(overview_conn, product_id, price=140 + product_id)
    await renumber(overview_conn)
    body = await get_json(overview_client, "/products")
    assert [p["id"] for p in body] == [2, 5, 9, 1000]
    first = body[0]
    assert list(first) == PRODUCT_KEYS
    assert first == {
        "id": 2,
        "name": "Product 2",
        "slogan": "Blend in to your crowd",
        "description": 'A "quoted", multi-line\ndescription',
        "category": "Jackets",
        "default_price": "142.00",
    }


async def test_list_paging_defaults_and_far_pages(overview_client, overview_conn):
    for product_id in range(1, 13):
        await add_product(overview_conn, product_id * 3)
    await renumber(overview_conn)
    assert [p["id"] for p in await get_json(overview_client, "/products")] == [3, 6, 9, 12, 15]
    page2 = await get_json(overview_client, "/products?page=2&count=5")
    assert [p["id"] for p in page2] == [18, 21, 24, 27, 30]
    page3 = await get_json(overview_client, "/products?page=3&count=5")
    assert [p["id"] for p in page3] == [33, 36]
    assert await get_json(overview_client, "/products?page=4&count=5") == []
    assert await get_json(overview_client, "/products?page=10000000&count=1000") == []
    all_ = await get_json(overview_client, "/products?count=1000")
    assert [p["id"] for p in all_] == [3 * i for i in range(1, 13)]
    assert await get_json(overview_client, "/products/?page=1&count=1") == [all_[0]]


async def test_far_page_costs_what_page_one_costs(overview_client, overview_conn):
    """The page query is an index range on seq: page 4,000 touches as many buffers
    as page 1 (an OFFSET would read every row before the page)."""
    await overview_conn.execute(
        "INSERT INTO products (id, seq, name, default_price)"
        " SELECT 2 * g, g, 'P' || g, 10 FROM generate_series(1, 20000) g"
    )
    await overview_conn.execute("ANALYZE products")

    async def buffers(page: int, count: int) -> tuple[int, int]:
        first = (page - 1) * count
        [plan] = json.loads(
            await overview_conn.fetchval(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + queries.PRODUCT_PAGE,
                first,
                first + count,
            )
        )
        node = plan["Plan"]
        assert node["Node Type"] == "Index Scan" and node["Index Name"] == "products_seq_idx"
        return node["Actual Rows"], node["Shared Hit Blocks"] + node["Shared Read Blocks"]

    rows1, cost1 = await buffers(1, 5)
    rows_far, cost_far = await buffers(4000, 5)
    assert rows1 == rows_far == 5
    assert cost_far <= cost1 + 1
    far = await get_json(overview_client, "/products?page=4000&count=5")
    assert [p["id"] for p in far] == [2 * i for i in range(19996, 20001)]


@pytest.mark.parametrize(
    "query",
    ["page=0", "page=-1", "page=abc", "count=0", "count=1001", "count=1.5", "page=1e3"],
)
async def test_list_malformed_paging_is_400(overview_client, query):
    body = await get_json(overview_client, f"/products?{query}", 400)
    assert list(body) == ["error"]
    assert query.split("=")[0] in body["error"]


# --- GET /products/:id --------------------------------------------------------


async def test_detail_with_features_in_feature_id_order(overview_client, overview_conn):
    await add_product(overview_conn, 7, price=99)
    await renumber(overview_conn)
    for feature_id, name, value in [(30, "Lenses", None), (12, "Fabric", "Canvas"), (20, "", "")]:
        await overview_conn.execute(
            "INSERT INTO features (id, product_id, feature, value) VALUES ($1, 7, $2, $3)",
            feature_id,
            name,
            value,
        )
    body = await get_json(overview_client, "/products/7")
    assert list(body) == [*PRODUCT_KEYS, "features"]
    assert body["id"] == 7 and body["default_price"] == "99.00"
    assert body["features"] == [
        {"feature": "Fabric", "value": "Canvas"},
        {"feature": "", "value": ""},
        {"feature": "Lenses", "value": None},
    ]
    assert all(list(f) == ["feature", "value"] for f in body["features"])


async def test_detail_without_features_is_empty_list(overview_client, overview_conn):
    await add_product(overview_conn, 8)
    await renumber(overview_conn)
    assert (await get_json(overview_client, "/products/8/"))["features"] == []


@pytest.mark.parametrize("suffix", ["", "/styles", "/related"])
async def test_unknown_product_is_404_json(overview_client, overview_conn, suffix):
    await add_product(overview_conn, 1)
    body = await get_json(overview_client, f"/products/2147483647{suffix}", 404)
    assert body == {"error": "product_id 2147483647 does not exist"}


@pytest.mark.parametrize("raw", ["abc", "0", "-1", "1.5", "2147483648", "%20", "1e3"])
@pytest.mark.parametrize("suffix", ["", "/styles", "/related"])
async def test_malformed_product_id_is_400_json(overview_client, raw, suffix):
    body = await get_json(overview_client, f"/products/{raw}{suffix}", 400)
    assert "product_id" in body["error"]


# --- GET /products/:id/styles -------------------------------------------------


async def test_styles_shape_types_and_orders(overview_client, overview_conn):
    await add_product(overview_conn, 1)
    await renumber(overview_conn)
    await add_style(overview_conn, 12, 1, sale=None, default=False)
    await add_style(overview_conn, 3, 1, sale=100, default=True)
    # Photo and sku ids out of insertion order: the answer follows the ids.
    await add_photo(overview_conn, 9, 3, "https://img/9", "https://img/9t")
    await add_photo(overview_conn, 4, 3, "https://img/4", None)
    await add_sku(overview_conn, 41, 3, "S", 16)
    await add_sku(overview_conn, 37, 3, "XS", 8)
    await add_sku(overview_conn, 50, 12, "7.5", 0)
    await add_photo(overview_conn, 1, 12, "https://img/1", "https://img/1t")
    body = await get_json(overview_client, "/products/1/styles")
    assert list(body) == ["product_id", "results"]
    assert body["product_id"] == "1"
    first, second = body["results"]
    assert list(first) == STYLE_KEYS and list(second) == STYLE_KEYS
    assert first == {
        "style_id": 3,
        "name": "Style 3",
        "original_price": "140.00",
        "sale_price": "100.00",
        "default?": True,
        "photos": [
            {"thumbnail_url": None, "url": "https://img/4"},
            {"thumbnail_url": "https://img/9t", "url": "https://img/9"},
        ],
        "skus": {"37": {"quantity": 8, "size": "XS"}, "41": {"quantity": 16, "size": "S"}},
    }
    assert list(first["skus"]) == ["37", "41"]
    assert all(list(p) == ["thumbnail_url", "url"] for p in first["photos"])
    assert all(list(s) == ["quantity", "size"] for s in first["skus"].values())
    assert second["style_id"] == 12 and second["sale_price"] is None
    assert second["default?"] is False
    assert second["skus"] == {"50": {"quantity": 0, "size": "7.5"}}


async def test_style_without_photos_or_skus_has_placeholders(overview_client, overview_conn):
    await add_product(overview_conn, 2)
    await renumber(overview_conn)
    await add_style(overview_conn, 5, 2)
    [style] = (await get_json(overview_client, "/products/2/styles"))["results"]
    assert style["photos"] == [{"thumbnail_url": None, "url": None}]
    assert list(style["photos"][0]) == ["thumbnail_url", "url"]
    assert style["skus"] == {"null": {"quantity": None, "size": None}}
    assert list(style["skus"]["null"]) == ["quantity", "size"]


async def test_product_without_styles_is_empty_results(overview_client, overview_conn):
    await add_product(overview_conn, 3)
    await renumber(overview_conn)
    assert await get_json(overview_client, "/products/3/styles") == {
        "product_id": "3",
        "results": [],
    }


async def test_styles_cost_a_fixed_number_of_statements(
    overview_client, overview_conn, redis_server
):
    """However many styles: without prebuilt documents, the document probe and
    one aggregating statement; after the loader's build, one primary-key
    lookup. A spy on the service's Database wrapper counts them."""
    await add_product(overview_conn, 4)
    await renumber(overview_conn)
    for style_id in range(100, 108):
        await add_style(overview_conn, style_id, 4)
        await add_sku(overview_conn, style_id, style_id, "M", 1)
    from services.common.resources import DB

    db = overview_client.app[DB]
    calls = []

    def spy(method):
        async def counting(sql, *args):
            calls.append(sql)
            return await method(sql, *args)

        return counting

    # The catalogue's reads are db.read_* (read replicas may take them).
    db.read_fetch, db.read_fetchval = spy(db.read_fetch), spy(db.read_fetchval)
    db.read_fetchrow = db.fetch = db.fetchval = db.fetchrow = None  # any other path fails loudly
    live = await get_json(overview_client, "/products/4/styles")
    assert len(live["results"]) == 8
    assert calls == [queries.DOCUMENT_STYLES, queries.PRODUCT_STYLES]

    async with overview_conn.transaction():
        await build_documents(overview_conn)
    assert await flush_namespace(redis_server.url, CACHE_NAMESPACE)  # as the loader does
    # Other processes apply a flush within the staleness bound: wait for it.
    assert await overview_client.server.app[CACHE].drain()
    calls.clear()
    assert await get_json(overview_client, "/products/4/styles") == live
    assert calls == [queries.DOCUMENT_STYLES]


# --- GET /products/:id/related ------------------------------------------------


async def test_related_bare_numbers_in_row_order(overview_client, overview_conn):
    for product_id in (1, 2, 3, 7, 8):
        await add_product(overview_conn, product_id)
    await renumber(overview_conn)
    for row_id, related in [(10, 2), (11, 3), (12, 8), (13, 7)]:
        await overview_conn.execute(
            "INSERT INTO related (id, current_product_id, related_product_id) VALUES ($1, 1, $2)",
            row_id,
            related,
        )
    resp = await overview_client.get("/products/1/related")
    assert resp.status == 200
    assert await resp.read() == b"[2,3,8,7]"
    assert await get_json(overview_client, "/products/2/related") == []


# --- cache ----------------------------------------------------------------------


async def test_catalogue_is_cached_until_the_namespace_is_flushed(
    service_client, overview_db, overview_conn, redis_server
):
    # What this asserts is that answers stay cached: on a loaded CI machine a
    # Redis call over the default 50 ms deadline fails open (the answer then
    # comes from Postgres, fresh), which is right for the service and wrong
    # for this test, so the deadline is generous here. And the cache is live
    # (subscribed, leased, its generation read) before the first read: one
    # starting up reads Postgres and may fill under a generation it then
    # leaves (CI caught that).
    overview_client = await service_client(
        "overview", overview_db, wait_cache=True, redis_timeout_ms=5000
    )
    await add_product(overview_conn, 1, name="Before")
    await renumber(overview_conn)
    await add_style(overview_conn, 1, 1)
    paths = ["/products/1", "/products/1/styles", "/products/1/related", "/products"]
    [await get_json(overview_client, p) for p in paths]  # first misses: not cached (admission.py)
    before = [await get_json(overview_client, p) for p in paths]
    # The fills are in Redis too, so a lease lapsing on a loaded machine (the
    # local tier then stands aside) still leaves the answers cached.
    assert await overview_client.server.app[CACHE].drain()
    # A bulk reload changes the rows behind the service's back...
    await overview_conn.execute("UPDATE products SET name = 'After'")
    await overview_conn.execute("UPDATE styles SET name = 'Restyled'")
    await overview_conn.execute(
        "INSERT INTO related (current_product_id, related_product_id) VALUES (1, 1)"
    )
    assert [await get_json(overview_client, p) for p in paths] == before  # served from cache
    # ...and ends with the loader's flush, after which every answer is fresh.
    assert await flush_namespace(redis_server.url, CACHE_NAMESPACE)
    # Other processes apply a flush within the staleness bound: wait for it.
    assert await overview_client.server.app[CACHE].drain()
    after = [await get_json(overview_client, p) for p in paths]
    assert after[0]["name"] == "After" and after[3][0]["name"] == "After"
    assert after[1]["results"][0]["name"] == "Restyled"
    assert after[2] == [1]


async def test_operational_routes(overview_client):
    assert (await overview_client.get("/healthz")).status == 200
    ready = await get_json(overview_client, "/readyz")
    assert ready["database"] == "up"
    resp = await overview_client.get("/metrics")
    assert resp.status == 200 and "runway_http_request_duration_seconds" in await resp.text()
    body = await get_json(overview_client, "/nope", 404)
    assert list(body) == ["error"]
