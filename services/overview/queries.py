"""Every SQL statement of the overview service, and the shaping of rows into
ready-to-send response bytes. Each read answer is one round trip. What is not
there raises one of the exceptions below; views.py says it in HTTP."""

from __future__ import annotations

import asyncpg
import orjson

from services.common.db import Database

from .schemas import Interaction


class UnknownProduct(LookupError):
    """No product with this id."""


class UnknownSku(LookupError):
    """No sku with this id."""


class OutOfStock(Exception):
    """The cart already holds all of the sku's stock."""


# Prices are numeric(12,2): `::text` renders the contract's "140.00" in Postgres.
_PRODUCT_COLUMNS = "p.id, p.name, p.slogan, p.description, p.category, p.default_price::text"

# seq is the dense rank by id (see 001_schema.sql): a page is a seq range, so
# its cost does not grow with the page number. Bounds are bigint: page * count
# may exceed int4.
PRODUCT_PAGE = f"""
SELECT {_PRODUCT_COLUMNS}
FROM products p
WHERE p.seq > $1::bigint AND p.seq <= $2::bigint
ORDER BY p.seq
"""

PRODUCT_DETAIL = f"""
SELECT {_PRODUCT_COLUMNS}, f.features, f.values
FROM products p
LEFT JOIN LATERAL (
    SELECT array_agg(feature ORDER BY id) AS features, array_agg(value ORDER BY id) AS values
    FROM features WHERE product_id = p.id
) f ON true
WHERE p.id = $1
"""

# One row per style (or one row with a NULL style for a product without
# styles; no row at all for an unknown product), photos and skus aggregated
# per style by LATERAL subqueries on (style_id, id) indexes.
PRODUCT_STYLES = """
SELECT s.id, s.name, s.original_price::text, s.sale_price::text, s.default_style,
       ph.urls, ph.thumbnails, sk.ids, sk.quantities, sk.sizes
FROM products p
LEFT JOIN styles s ON s.product_id = p.id
LEFT JOIN LATERAL (
    SELECT array_agg(url ORDER BY id) AS urls, array_agg(thumbnail_url ORDER BY id) AS thumbnails
    FROM photos WHERE style_id = s.id
) ph ON true
LEFT JOIN LATERAL (
    SELECT array_agg(id ORDER BY id) AS ids, array_agg(quantity ORDER BY id) AS quantities,
           array_agg(size ORDER BY id) AS sizes
    FROM skus WHERE style_id = s.id
) sk ON true
WHERE p.id = $1
ORDER BY s.id
"""

PRODUCT_RELATED = """
SELECT r.ids
FROM products p
LEFT JOIN LATERAL (
    SELECT array_agg(related_product_id ORDER BY id) AS ids
    FROM related WHERE current_product_id = p.id
) r ON true
WHERE p.id = $1
"""

# The loader's prebuilt answers (003_documents.sql): one primary-key lookup.
DOCUMENT_DETAIL = "SELECT detail FROM product_documents WHERE product_id = $1"
DOCUMENT_STYLES = "SELECT styles FROM product_documents WHERE product_id = $1"
DOCUMENT_RELATED = "SELECT related FROM product_documents WHERE product_id = $1"

# The same answers for every product at once, in product id order, for the
# loader to build product_documents: the live queries' columns, with
# aggregates over whole tables (one sort each) instead of per-product lookups.
ALL_DETAILS = f"""
SELECT {_PRODUCT_COLUMNS}, f.features, f.values
FROM products p
LEFT JOIN (
    SELECT product_id, array_agg(feature ORDER BY id) AS features,
           array_agg(value ORDER BY id) AS values
    FROM features GROUP BY product_id
) f ON f.product_id = p.id
ORDER BY p.id
"""

ALL_STYLES = """
SELECT s.id, s.name, s.original_price::text, s.sale_price::text, s.default_style,
       ph.urls, ph.thumbnails, sk.ids, sk.quantities, sk.sizes, s.product_id
FROM styles s
LEFT JOIN (
    SELECT style_id, array_agg(url ORDER BY id) AS urls,
           array_agg(thumbnail_url ORDER BY id) AS thumbnails
    FROM photos GROUP BY style_id
) ph ON ph.style_id = s.id
LEFT JOIN (
    SELECT style_id, array_agg(id ORDER BY id) AS ids,
           array_agg(quantity ORDER BY id) AS quantities, array_agg(size ORDER BY id) AS sizes
    FROM skus GROUP BY style_id
) sk ON sk.style_id = s.id
ORDER BY s.product_id, s.id
"""

ALL_RELATED = """
SELECT current_product_id, array_agg(related_product_id ORDER BY id)
FROM related GROUP BY current_product_id ORDER BY current_product_id
"""

# Add one unit of a sku to a session's cart, only while the session holds
# fewer than the sku's quantity. Two concurrent adds serialise on the cart
# row (ON CONFLICT DO UPDATE locks it and re-checks WHERE against the latest
# version; a concurrent first insert waits on the unique key), so the last
# unit goes to exactly one of them. No row back = unknown sku or no stock left.
CART_ADD = """
INSERT INTO cart_items AS c (session_id, sku_id, count)
SELECT $1, s.id, 1 FROM skus s WHERE s.id = $2 AND s.quantity > 0
ON CONFLICT (session_id, sku_id) DO UPDATE SET count = c.count + 1
WHERE c.count < (SELECT quantity FROM skus WHERE id = $2)
RETURNING c.count
"""

SKU_EXISTS = "SELECT EXISTS (SELECT 1 FROM skus WHERE id = $1)"

CART_ITEMS = "SELECT sku_id, count FROM cart_items WHERE session_id = $1 ORDER BY sku_id"

INSERT_INTERACTION = (
    "INSERT INTO interactions (element, widget, time, session_id) VALUES ($1, $2, $3, $4)"
)

_NO_PHOTOS = ({"thumbnail_url": None, "url": None},)
# What the hosted API sent for a style without skus; front ends depend on it.
_NO_SKUS = {"null": {"quantity": None, "size": None}}


def _product(row: asyncpg.Record) -> dict:
    return {
        "id": row[0],
        "name": row[1],
        "slogan": row[2],
        "description": row[3],
        "category": row[4],
        "default_price": row[5],
    }


async def product_page(db: Database, page: int, count: int) -> bytes:
    first = (page - 1) * count
    rows = await db.read_fetch(PRODUCT_PAGE, first, first + count)
    return orjson.dumps([_product(r) for r in rows])


def detail_body(row: asyncpg.Record) -> bytes:
    """GET /products/:id from a PRODUCT_DETAIL row."""
    body = _product(row)
    names, values = row[6] or (), row[7] or ()
    body["features"] = [{"feature": f, "value": v} for f, v in zip(names, values, strict=True)]
    return orjson.dumps(body)


async def product_detail(db: Database, product_id: int) -> bytes:
    document = await db.read_fetchval(DOCUMENT_DETAIL, product_id)
    if document is not None:
        return document
    row = await db.read_fetchrow(PRODUCT_DETAIL, product_id)
    if row is None:
        raise UnknownProduct(product_id)
    return detail_body(row)


def _style(row: asyncpg.Record) -> dict:
    urls, thumbnails = row[5], row[6]
    if urls:
        photos = [{"thumbnail_url": t, "url": u} for t, u in zip(thumbnails, urls, strict=True)]
    else:
        photos = list(_NO_PHOTOS)
    ids = row[7]
    if ids:
        skus = {
            str(i): {"quantity": q, "size": s} for i, q, s in zip(ids, row[8], row[9], strict=True)
        }
    else:
        skus = _NO_SKUS
    return {
        "style_id": row[0],
        "name": row[1],
        "original_price": row[2],
        "sale_price": row[3],
        "default?": row[4],
        "photos": photos,
        "skus": skus,
    }


def styles_body(product_id: int, rows: list[asyncpg.Record]) -> bytes:
    """GET /products/:id/styles from its PRODUCT_STYLES rows (one with a NULL
    style id for a product without styles)."""
    results = [_style(r) for r in rows if r[0] is not None]
    return orjson.dumps({"product_id": str(product_id), "results": results})


def related_body(ids: list[int] | None) -> bytes:
    return orjson.dumps(ids or [])


async def product_styles(db: Database, product_id: int) -> bytes:
    document = await db.read_fetchval(DOCUMENT_STYLES, product_id)
    if document is not None:
        return document
    rows = await db.read_fetch(PRODUCT_STYLES, product_id)
    if not rows:
        raise UnknownProduct(product_id)
    return styles_body(product_id, rows)


async def product_related(db: Database, product_id: int) -> bytes:
    document = await db.read_fetchval(DOCUMENT_RELATED, product_id)
    if document is not None:
        return document
    row = await db.read_fetchrow(PRODUCT_RELATED, product_id)
    if row is None:
        raise UnknownProduct(product_id)
    return related_body(row[0])


async def cart_items(db: Database, session_id: str) -> bytes:
    # Uncached, and a session reads its own cart writes: always the primary.
    rows = await db.fetch(CART_ITEMS, session_id)
    return orjson.dumps([{"sku_id": r[0], "count": r[1]} for r in rows])


async def add_to_cart(db: Database, session_id: str, sku_id: int) -> int:
    """The session's new count of the sku. The write is CART_ADD alone (one
    statement, one transaction); when it adds nothing, a read tells an unknown
    sku (UnknownSku) from one with no stock left for this cart (OutOfStock)."""
    async with db.connection() as conn:
        count = await conn.fetchval(CART_ADD, session_id, sku_id)
        if count is not None:
            return count
        if not await conn.fetchval(SKU_EXISTS, sku_id):
            raise UnknownSku(sku_id)
    raise OutOfStock(sku_id)


async def add_interaction(db: Database, event: Interaction, session_id: str | None) -> None:
    """One durable INSERT per event."""
    async with db.connection() as conn:
        await conn.execute(INSERT_INTERACTION, event.element, event.widget, event.time, session_id)
