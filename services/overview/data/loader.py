"""Bulk load of the product catalogue export into the overview database.

    python -m services.overview.data.loader --data data/overview --report data/reports/overview

One transaction: TRUNCATE the catalogue and carts, drop the secondary
indexes, COPY product, features, styles, photos, skus, related and cart
(each file of 16 MB or more parsed and checked in a child process while
Postgres ingests the previous chunk; ServiceLoader), rebuild the indexes,
ANALYZE, move the id sequences past the loaded ids, build product_documents
(every product's prebuilt detail, styles and related answers;
build_documents); after the commit, flush the service's response cache. A
failed load rolls back and leaves the previous data in place; re-running
replaces it. The interactions table is never touched (it is not part of the
export).

Repaired (loaded, counted as repaired):
- photos.csv rows whose thumbnail_url lost its closing quote: photo urls never
  hold newlines, so a line with an odd number of quotes gets its quote closed
  at the line end instead of swallowing the following lines.

Rejected (see rejects.csv, with file, line and reason):
- related rows pointing to product 0, duplicate (current, related) pairs (the
  first row wins), and rows naming a product that is not in product.csv;
- features/styles of unknown products, photos/skus of unknown styles, cart
  rows of unknown skus or beyond the sku's stock for that session;
- duplicate ids, wrong field counts, malformed numbers or flags.

Converted: bare `null` is SQL NULL where the column allows it (sale_price,
feature value, photo urls; empty text for product slogan/description/category);
a sale_price of 0 is NULL (no sale); default_style accepts 1/0 and true/false.
`products.seq` (the dense rank by id that GET /products pages on) is assigned
while parsing, or renumbered after the COPY when product.csv is not in id order.
"""

from __future__ import annotations

import re
import time
from array import array
from pathlib import Path
from typing import Any

import asyncpg

from services.common.data.bulk_copy import begin_bulk_load, copy_file
from services.common.data.csv_parse import Converter, FileSpec, close_unterminated_quote
from services.common.data.rebuild import drop_primary_keys, rebuild_after_copy
from services.common.data.report import LoadReport
from services.common.data.service_load import ServiceLoader
from services.common.data.values import (
    BOOL_0_1,
    BOOL_ANY,
    EtlError,
    IdBitmap,
    Reject,
    int_map,
    map_set,
)
from services.overview import queries
from services.overview.app import CACHE_NAMESPACE, MIGRATIONS

from .columns import HEADERS

MAIN_TABLE = "products"
ID_TABLES = ("products", "features", "styles", "photos", "skus", "related")
TABLES = (*ID_TABLES, "cart_items", "product_documents")

PRODUCTS = FileSpec(
    "product.csv",
    "products",
    HEADERS["product.csv"],
    copy_columns=("id", "seq", "name", "slogan", "description", "category", "default_price"),
    nullable=frozenset({"slogan", "description", "category"}),
)
FEATURES = FileSpec(
    "features.csv", "features", HEADERS["features.csv"], nullable=frozenset({"value"})
)
STYLES = FileSpec(
    "styles.csv",
    "styles",
    HEADERS["styles.csv"],
    copy_columns=("id", "product_id", "name", "sale_price", "original_price", "default_style"),
    nullable=frozenset({"sale_price"}),
)
PHOTOS = FileSpec(
    "photos.csv",
    "photos",
    HEADERS["photos.csv"],
    copy_columns=("id", "style_id", "url", "thumbnail_url"),
    nullable=frozenset({"url", "thumbnail_url"}),
    repair=close_unterminated_quote,
)
SKUS = FileSpec(
    "skus.csv",
    "skus",
    HEADERS["skus.csv"],
    copy_columns=("id", "style_id", "size", "quantity"),
)
RELATED = FileSpec("related.csv", "related", HEADERS["related.csv"])
CART = FileSpec(
    "cart.csv",
    "cart_import",
    HEADERS["cart.csv"],
    copy_columns=("id", "session_id", "sku_id", "active"),
)

# Integer prices in the export; two decimals accepted (the column is numeric(12,2)).
_PRICE = re.compile(r"[0-9]{1,10}(\.[0-9]{1,2})?")
_SESSION = re.compile(r"[A-Za-z0-9._~-]{1,128}")  # what the API accepts as a session id


def _price(value: str, column: str) -> str:
    if _PRICE.fullmatch(value) is None:
        raise Reject(f"{column} {value!r} is not a non-negative price")
    return value


def _positive(value: str, column: str) -> int:
    number = int(value)
    if number <= 0:
        raise Reject(f"{column} {number} is not a positive id")
    return number


# Converter factories: module-level so a spawned parser process can unpickle
# them; each returns a closure (the hot path), some with a .result() whose
# value (the accepted ids) the next files are checked against.


def products_converter(_: Any = None) -> Converter:
    """Assigns seq = 1, 2, ... in file order; `ordered` says whether that is id order."""
    accepted = IdBitmap()
    state = {"seq": 0, "last": 0, "ordered": True}

    def convert(row: list[Any]) -> tuple[Any, ...]:
        pid = row[0]
        price = _price(row[5], "default_price")
        if pid < state["last"]:
            state["ordered"] = False
        state["last"] = pid
        state["seq"] += 1
        accepted.add(pid)
        return (pid, state["seq"], row[1], row[2] or "", row[3] or "", row[4] or "", price)

    convert.result = lambda: (accepted, state["ordered"])  # type: ignore[attr-defined]
    return convert


def features_converter(products: IdBitmap) -> Converter:
    def convert(row: list[Any]) -> tuple[Any, ...]:
        pid = _positive(row[1], "product_id")
        if pid not in products:
            raise Reject(f"unknown product {pid}")
        return (row[0], pid, row[2], row[3])

    return convert


def styles_converter(products: IdBitmap) -> Converter:
    accepted = IdBitmap()

    def convert(row: list[Any]) -> tuple[Any, ...]:
        sid = row[0]
        pid = _positive(row[1], "productId")
        if pid not in products:
            raise Reject(f"unknown product {pid}")
        sale = row[3]
        if sale is not None:
            sale = _price(sale, "sale_price")
            if float(sale) == 0:
                sale = None  # 0 means no sale: the API answers null, never "0"
        original = _price(row[4], "original_price")
        default = BOOL_ANY.get(row[5])
        if default is None:
            raise Reject(f"default_style {row[5]!r} is not one of 1/0/true/false")
        accepted.add(sid)
        return (sid, pid, row[2], sale, original, default)

    convert.result = lambda: accepted  # type: ignore[attr-defined]
    return convert


def photos_converter(styles: IdBitmap) -> Converter:
    def convert(row: list[Any]) -> tuple[Any, ...]:
        sid = _positive(row[1], "styleId")
        if sid not in styles:
            raise Reject(f"unknown style {sid}")
        return (row[0], sid, row[2], row[3])

    return convert


def skus_converter(styles: IdBitmap) -> Converter:
    """Hands back sku id -> quantity + 1 (0 = no such sku) for the cart check."""
    stock = int_map()

    def convert(row: list[Any]) -> tuple[Any, ...]:
        kid = row[0]
        sid = _positive(row[1], "styleId")
        if sid not in styles:
            raise Reject(f"unknown style {sid}")
        quantity = int(row[3])
        if not 0 <= quantity < 2**31 - 1:
            raise Reject(f"quantity {quantity} is negative or too large")
        map_set(stock, kid, quantity + 1)
        return (kid, sid, row[2], quantity)

    convert.result = lambda: stock  # type: ignore[attr-defined]
    return convert


def related_converter(products: IdBitmap) -> Converter:
    # (current, related) packed into one int: a set of ints is a third the size
    # of a set of tuples (4.5M pairs at full scale).
    seen: set[int] = set()

    def convert(row: list[Any]) -> tuple[Any, ...]:
        current, related = int(row[1]), int(row[2])
        if related == 0:
            raise Reject("related_product_id is 0")
        if current <= 0 or related < 0:
            raise Reject(f"product ids {current}, {related} are not positive")
        pair = (current << 32) | related
        if pair in seen:
            raise Reject(f"duplicate related pair ({current}, {related})")
        if current not in products:
            raise Reject(f"unknown current product {current}")
        if related not in products:
            raise Reject(f"unknown related product {related}")
        seen.add(pair)
        return (row[0], current, related)

    return convert


def cart_converter(stock: array) -> Converter:
    """Rows are units (the `product_id` column holds sku ids). An active unit
    beyond the sku's stock for that session is rejected: a cart never holds
    more of a sku than its quantity."""
    held: dict[tuple[str, int], int] = {}
    size = len(stock)

    def convert(row: list[Any]) -> tuple[Any, ...]:
        session = row[1]
        if _SESSION.fullmatch(session) is None:
            raise Reject(f"user_session {session!r} is not a usable session id")
        sku = _positive(row[2], "product_id")
        quantity = stock[sku] - 1 if sku < size else -1
        if quantity < 0:
            raise Reject(f"unknown sku {sku}")
        active = BOOL_0_1.get(row[3])
        if active is None:
            active = BOOL_ANY.get(row[3])
            if active is None:
                raise Reject(f"active {row[3]!r} is not 0/1")
        if active:
            key = (session, sku)
            count = held.get(key, 0)
            if count >= quantity:
                raise Reject(f"session {session} already holds all {quantity} of sku {sku}")
            held[key] = count + 1
        return (row[0], session, sku, active)

    return convert


RENUMBER_SQL = """
UPDATE products p SET seq = r.rn
FROM (SELECT id, row_number() OVER (ORDER BY id) AS rn FROM products) r
WHERE p.id = r.id AND p.seq <> r.rn
"""
CART_STAGING_SQL = """
CREATE TEMP TABLE cart_import (
    id integer, session_id text NOT NULL, sku_id integer NOT NULL, active boolean NOT NULL
) ON COMMIT DROP
"""
CART_ITEMS_SQL = """
INSERT INTO cart_items (session_id, sku_id, count)
SELECT session_id, sku_id, count(*) FROM cart_import WHERE active GROUP BY session_id, sku_id
"""


async def _load_files(
    conn: asyncpg.Connection, data_dir: Path, report: LoadReport, parse_in_child: bool | None
) -> None:
    index_sql = await begin_bulk_load(conn, MIGRATIONS, TABLES)
    # Maintaining the id btrees row by row made COPY of skus.csv (11M rows)
    # take 27s instead of 7s, plus 4s to build the key afterwards with a
    # sort; the parsers already reject duplicate ids, so re-adding the keys
    # cannot fail. Inside the load transaction: a failed load gets its keys
    # back with the rollback.
    primary_keys = await drop_primary_keys(conn, ID_TABLES)
    kw = {"parse_in_child": parse_in_child}
    products, ordered = await copy_file(
        conn, data_dir, PRODUCTS, products_converter, None, report, **kw
    )
    if not ordered:
        started = time.perf_counter()
        await conn.execute(RENUMBER_SQL)
        report.step("renumber_products", time.perf_counter() - started)
    await copy_file(conn, data_dir, FEATURES, features_converter, products, report, **kw)
    styles = await copy_file(conn, data_dir, STYLES, styles_converter, products, report, **kw)
    await copy_file(conn, data_dir, PHOTOS, photos_converter, styles, report, **kw)
    stock = await copy_file(conn, data_dir, SKUS, skus_converter, styles, report, **kw)
    await copy_file(conn, data_dir, RELATED, related_converter, products, report, **kw)
    del products, styles
    # The cart is small: parsed here, not in a child (no 45 MB stock map to ship).
    await conn.execute(CART_STAGING_SQL)
    await copy_file(
        conn, data_dir, CART, cart_converter, stock, report, parse_in_child=False, freeze=False
    )
    await conn.execute(CART_ITEMS_SQL)

    await rebuild_after_copy(conn, report, index_sql, TABLES, ID_TABLES, primary_keys=primary_keys)
    started = time.perf_counter()
    await build_documents(conn)
    report.step("product_documents", time.perf_counter() - started)


DOCUMENT_BATCH = 5_000


async def build_documents(conn: asyncpg.Connection) -> int:
    """Fill product_documents (truncated by the load) with every product's three
    answers, shaped by the functions the live queries use, so the bytes are the
    same. Three cursors in product id order are merged; returns the count."""
    details = conn.cursor(queries.ALL_DETAILS, prefetch=DOCUMENT_BATCH)
    styles = conn.cursor(queries.ALL_STYLES, prefetch=DOCUMENT_BATCH).__aiter__()
    related = conn.cursor(queries.ALL_RELATED, prefetch=DOCUMENT_BATCH).__aiter__()
    style = await anext(styles, None)
    rel = await anext(related, None)
    batch: list[tuple[int, bytes, bytes, bytes]] = []
    built = 0
    async for row in details:
        product_id = row[0]
        rows = []
        while style is not None and style[10] == product_id:
            rows.append(style)
            style = await anext(styles, None)
        ids = None
        if rel is not None and rel[0] == product_id:
            ids = rel[1]
            rel = await anext(related, None)
        batch.append(
            (
                product_id,
                queries.detail_body(row),
                queries.styles_body(product_id, rows),
                queries.related_body(ids),
            )
        )
        if len(batch) >= DOCUMENT_BATCH:
            await _copy_documents(conn, batch)
            built += len(batch)
            batch = []
    if batch:
        await _copy_documents(conn, batch)
        built += len(batch)
    if style is not None or rel is not None:  # the loader rejects orphans, so this is a bug
        raise EtlError("product_documents: styles or related rows of no product")
    return built


async def _copy_documents(conn: asyncpg.Connection, batch: list) -> None:
    await conn.copy_records_to_table(
        "product_documents", records=batch, columns=["product_id", "detail", "styles", "related"]
    )


load = ServiceLoader(
    "overview",
    CACHE_NAMESPACE,
    MIGRATIONS,
    _load_files,
    "Load the product CSV export into Postgres.",
    tables=TABLES,
)
main = load.main

if __name__ == "__main__":
    main()
