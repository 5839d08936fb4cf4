"""The loader's handling of each export quirk (one small CSV set per test), its
report and rejects, re-runs, the cache flush, and a generator -> loader round trip."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from services.common.data.rebuild import index_names
from services.common.data.values import EtlError
from services.common.resources import CACHE
from services.overview import queries
from services.overview.app import MIGRATIONS
from services.overview.data import generator, loader

BASE = {
    "product.csv": (
        "id,name,slogan,description,category,default_price\n"
        '1,"Camo Onesie","Blend in to your crowd","The So Fatigues, ""really""","Jackets",140\n'
        '2,"Bright Future Sunglasses","You\'ve got to wear shades","Multi\nline","Accessories",69\n'
        '3,"Morning Joggers","Make yourself a morning person","","Pants",40\n'
    ),
    "features.csv": (
        "id,product_id,feature,value\n"
        '1,1,"Fabric","Canvas"\n'
        '2,1,"Buttons",null\n'
        '3,2,"Lenses","null"\n'
    ),
    "styles.csv": (
        "id,productId,name,sale_price,original_price,default_style\n"
        '1,1,"Forest Green & Black",null,140,1\n'
        '2,1,"Desert Brown & Tan",100,140,0\n'
        '3,2,"Black",0,69,true\n'
        '4,2,"White",null,69,false\n'
    ),
    "photos.csv": (
        "id,styleId,url,thumbnail_url\n"
        '1,1,"https://img/1","https://img/1t"\n'
        '2,1,"https://img/2","https://img/2t"\n'
        "3,2,null,null\n"
    ),
    "skus.csv": ('id,styleId,size,quantity\n1,1,"XS",8\n2,1,"S",16\n3,3,"7",1\n'),
    "related.csv": ("id,current_product_id,related_product_id\n1,1,2\n2,1,3\n3,2,1\n"),
    "cart.csv": (
        "id,user_session,product_id,active\n1,1234,1,1\n2,1234,1,1\n3,1234,2,0\n4,99,3,1\n"
    ),
}


def write_export(directory: Path, **files: str) -> Path:
    """BASE with some files replaced (keyword: file name without .csv)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in BASE.items():
        (directory / name).write_text(files.get(name.removesuffix(".csv"), text))
    return directory


async def run_load(tmp_path: Path, db: str, redis_url: str, **files: str) -> dict:
    data = write_export(tmp_path / "data", **files)
    return await loader.load(
        db, data, tmp_path / "report", redis_url=redis_url, parse_in_child=False, quiet=True
    )


def rejects(tmp_path: Path) -> list[dict]:
    with open(tmp_path / "report" / "rejects.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
async def load_base(tmp_path, overview_db, overview_conn, redis_server):
    await overview_conn.execute("TRUNCATE interactions")

    async def run(**files: str) -> dict:
        return await run_load(tmp_path, overview_db, redis_server.url, **files)

    return run


async def test_base_export_loads_every_file(load_base, overview_conn, tmp_path):
    report = await load_base()
    assert report["status"] == "ok"
    assert {k: v["loaded"] for k, v in report["files"].items()} == {
        "product.csv": 3,
        "features.csv": 3,
        "styles.csv": 4,
        "photos.csv": 3,
        "skus.csv": 3,
        "related.csv": 3,
        "cart.csv": 4,
    }
    assert report["totals"]["rejected"] == 0 and rejects(tmp_path) == []
    saved = json.loads((tmp_path / "report" / "load-report.json").read_text())
    assert saved["totals"] == report["totals"]
    product = await overview_conn.fetchrow("SELECT * FROM products WHERE id = 1")
    assert product["description"] == 'The So Fatigues, "really"'
    assert str(product["default_price"]) == "140.00"
    assert await overview_conn.fetchval("SELECT description FROM products WHERE id = 2") == (
        "Multi\nline"
    )


async def test_nulls_zero_sale_and_default_flags(load_base, overview_conn):
    await load_base()
    styles = await overview_conn.fetch(
        "SELECT id, sale_price::text, default_style FROM styles ORDER BY id"
    )
    # bare null and a 0 sale price are both "no sale"; 1/0 and true/false both flags.
    assert [tuple(r) for r in styles] == [
        (1, None, True),
        (2, "100.00", False),
        (3, None, True),
        (4, None, False),
    ]
    values = await overview_conn.fetch("SELECT value FROM features ORDER BY id")
    assert [r[0] for r in values] == ["Canvas", None, "null"]  # quoted "null" is text
    photo = await overview_conn.fetchrow("SELECT url, thumbnail_url FROM photos WHERE id = 3")
    assert tuple(photo) == (None, None)


async def test_photo_row_missing_its_closing_quote_is_repaired(load_base, overview_conn, tmp_path):
    photos = (
        "id,styleId,url,thumbnail_url\n"
        '1,1,"https://img/1","https://img/1t"\n'
        '2,1,"https://img/2","https://img/2t\n'  # the export's broken row
        '3,1,"https://img/3","https://img/3t"\n'
        '4,2,"https://img/4","https://img/4t\n'  # broken, and the file's last line
    )
    report = await load_base(photos=photos)
    stats = report["files"]["photos.csv"]
    assert (stats["read"], stats["loaded"], stats["repaired"], stats["rejected"]) == (4, 4, 2, 0)
    rows = await overview_conn.fetch("SELECT id, url, thumbnail_url FROM photos ORDER BY id")
    assert [tuple(r) for r in rows] == [
        (1, "https://img/1", "https://img/1t"),
        (2, "https://img/2", "https://img/2t"),
        (3, "https://img/3", "https://img/3t"),
        (4, "https://img/4", "https://img/4t"),
    ]
    assert rejects(tmp_path) == []


async def test_related_zero_duplicates_and_unknowns_are_rejected(
    load_base, overview_conn, tmp_path
):
    related = (
        "id,current_product_id,related_product_id\n"
        "1,1,3\n"
        "2,1,0\n"
        "3,1,2\n"
        "4,1,3\n"
        "5,2,1\n"
        "6,1,77\n"
        "7,2,1\n"
    )
    report = await load_base(related=related)
    stats = report["files"]["related.csv"]
    assert (stats["read"], stats["loaded"], stats["rejected"]) == (7, 3, 4)
    rows = await overview_conn.fetch(
        "SELECT current_product_id, related_product_id FROM related ORDER BY id"
    )
    assert [tuple(r) for r in rows] == [(1, 3), (1, 2), (2, 1)]  # export row order kept
    assert [(r["file"], r["line"], r["reason"]) for r in rejects(tmp_path)] == [
        ("related.csv", "3", "related_product_id is 0"),
        ("related.csv", "5", "duplicate related pair (1, 3)"),
        ("related.csv", "7", "unknown related product 77"),
        ("related.csv", "8", "duplicate related pair (2, 1)"),
    ]
    assert rejects(tmp_path)[0]["raw"] == "2,1,0\n"


async def test_orphans_and_bad_values_are_rejected_naming_the_reason(
    load_base, overview_conn, tmp_path
):
    report = await load_base(
        features='id,product_id,feature,value\n1,1,"Fabric","Canvas"\n2,9,"Cut","Loose"\n',
        styles=BASE["styles.csv"] + '5,8,"Orphan",null,10,1\n6,1,"Bad",null,abc,1\n'
        '7,1,"Flag",null,10,yes\n',
        skus=BASE["skus.csv"] + '4,5,"M",3\n5,1,"L",-1\n2,1,"S",4\n',
        cart=BASE["cart.csv"] + "5,99,3,1\n6,7,404,1\n7,has space,1,1\n",
    )
    got = {(r["file"], r["line"]): r["reason"] for r in rejects(tmp_path)}
    assert got == {
        ("features.csv", "3"): "unknown product 9",
        ("styles.csv", "6"): "unknown product 8",
        ("styles.csv", "7"): "original_price 'abc' is not a non-negative price",
        ("styles.csv", "8"): "default_style 'yes' is not one of 1/0/true/false",
        ("skus.csv", "5"): "unknown style 5",
        ("skus.csv", "6"): "quantity -1 is negative or too large",
        ("skus.csv", "7"): "duplicate id 2",
        ("cart.csv", "6"): "session 99 already holds all 1 of sku 3",
        ("cart.csv", "7"): "unknown sku 404",
        ("cart.csv", "8"): "user_session 'has space' is not a usable session id",
    }
    assert report["totals"]["rejected"] == len(got)
    # The first row with a duplicated id wins.
    assert await overview_conn.fetchval("SELECT quantity FROM skus WHERE id = 2") == 16


async def test_cart_rows_become_per_session_counts(load_base, overview_client):
    await load_base()
    resp = await overview_client.get("/cart", headers={"X-Session-Id": "1234"})
    assert await resp.json() == [{"sku_id": 1, "count": 2}]  # the inactive row is not held
    resp = await overview_client.get("/cart", headers={"X-Session-Id": "99"})
    assert await resp.json() == [{"sku_id": 3, "count": 1}]
    # Sku 3 has quantity 1 and session 99 holds it: no further unit.
    resp = await overview_client.post("/cart", json={"sku_id": 3}, headers={"X-Session-Id": "99"})
    assert resp.status == 422


async def test_old_export_headers_and_unordered_products_get_dense_seq(
    load_base, overview_conn, overview_client
):
    products = (
        "id, name, slogan, description, category, default_price\n"  # the older export
        '10,"Ten","","","Pants",10\n'
        '3,"Three","","","Pants",3\n'
        '7,"Seven","","","Pants",7\n'
    )
    report = await load_base(
        product=products,
        features="Id,Product_Id,Feature,Value\n",
        styles="id,productId,name,sale_price,original_price,default_style\n",
        photos="id,styleId,url,thumbnail_url\n",
        skus="id,styleId,size,quantity\n",
        related="id,current_product_id,related_product_id\n1,10,3\n",
        cart="id,user_session,product_id,active\n",
    )
    assert report["status"] == "ok"
    rows = await overview_conn.fetch("SELECT id, seq FROM products ORDER BY id")
    assert [tuple(r) for r in rows] == [(3, 1), (7, 2), (10, 3)]
    page = await (await overview_client.get("/products?count=2&page=2")).json()
    assert [p["id"] for p in page] == [10]
    assert page[0]["slogan"] == "" and page[0]["default_price"] == "10.00"


async def test_missing_column_or_file_fails_and_keeps_the_previous_load(
    load_base, overview_db, overview_conn, tmp_path
):
    await load_base()
    with pytest.raises(EtlError, match="product_id"):
        await load_base(features='id,feature,value\n1,"Fabric","Canvas"\n')
    report = json.loads((tmp_path / "report" / "load-report.json").read_text())
    assert report["status"] == "failed"
    write_export(tmp_path / "data")
    (tmp_path / "data" / "skus.csv").unlink()
    with pytest.raises(EtlError, match=r"skus\.csv"):
        await loader.load(
            overview_db,
            tmp_path / "data",
            tmp_path / "report",
            parse_in_child=False,
            quiet=True,
        )
    # The earlier load is intact: a failed load rolls back as a whole.
    assert await overview_conn.fetchval("SELECT count(*) FROM products") == 3
    assert await overview_conn.fetchval("SELECT count(*) FROM skus") == 3
    assert await overview_conn.fetchval("SELECT count(*) FROM cart_items") == 2


async def test_rerun_replaces_data_rebuilds_indexes_moves_sequences_keeps_events(
    load_base, overview_conn, overview_client
):
    await load_base()
    resp = await overview_client.post(
        "/interactions", json={"element": "a", "widget": "b", "time": "c"}
    )
    assert resp.status == 201
    resp = await overview_client.post("/cart", json={"sku_id": 2}, headers={"X-Session-Id": "s"})
    assert resp.status == 201
    await load_base()  # same export again
    counts = {t: await overview_conn.fetchval(f"SELECT count(*) FROM {t}") for t in loader.TABLES}
    assert counts == {
        "products": 3,
        "features": 3,
        "styles": 4,
        "photos": 3,
        "skus": 3,
        "related": 3,
        "cart_items": 2,  # the export's carts; session "s" was replaced with the catalogue
        "product_documents": 3,
    }
    assert await overview_conn.fetchval("SELECT count(*) FROM interactions") == 1
    indexes = {
        r[0]
        for r in await overview_conn.fetch(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"
        )
    }
    expected = set(index_names((MIGRATIONS / "002_indexes.sql").read_text()))
    assert expected <= indexes
    assert {f"{t}_pkey" for t in loader.ID_TABLES} <= indexes
    for table in loader.ID_TABLES:
        top = await overview_conn.fetchval(f"SELECT max(id) FROM {table}")
        nxt = await overview_conn.fetchval(
            "SELECT nextval(pg_get_serial_sequence($1, 'id'))", table
        )
        assert nxt > top, table


async def test_load_flushes_the_running_services_cache(load_base, overview_client):
    await load_base()
    before = await (await overview_client.get("/products/1")).json()
    assert before["name"] == "Camo Onesie"
    await (await overview_client.get("/products/1/styles")).json()
    renamed = BASE["product.csv"].replace("Camo Onesie", "Camo Onesie II")
    await load_base(product=renamed, styles=BASE["styles.csv"].replace(",100,", ",90,"))
    # The loader's flush reaches running processes within the staleness bound,
    # not at once: wait until this one has applied it.
    assert await overview_client.server.app[CACHE].drain()
    after = await (await overview_client.get("/products/1")).json()
    assert after["name"] == "Camo Onesie II"
    styles = await (await overview_client.get("/products/1/styles")).json()
    assert styles["results"][1]["sale_price"] == "90.00"


async def test_generator_round_trip(tmp_path, overview_db, overview_conn, redis_server):
    """Tiny scale through the default (child-process) parse path: every planted
    quirk is repaired or rejected exactly as the generator's manifest says."""
    first = generator.generate(tmp_path / "a", scale=0.0002, seed=7)
    generator.generate(tmp_path / "b", scale=0.0002, seed=7)
    for name in generator.HEADERS:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        header = (tmp_path / "a" / name).read_text().split("\n", 1)[0]
        assert header == ",".join(generator.HEADERS[name])
    report = await loader.load(
        overview_db, tmp_path / "a", tmp_path / "report", redis_url=redis_server.url, quiet=True
    )
    files = report["files"]
    for name, rows in first["rows"].items():
        assert files[name]["read"] == rows, name
        expected = first["expected_rejects"].get(name, 0)
        assert files[name]["rejected"] == expected, name
        assert files[name]["loaded"] == rows - expected, name
        assert files[name]["repaired"] == first["repairable"].get(name, 0), name
    assert first["repairable"]["photos.csv"] >= 1
    assert first["expected_rejects"]["related.csv"] >= 2
    assert await overview_conn.fetchval("SELECT count(*) FROM products") == first["products"]
    assert (
        await overview_conn.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM related GROUP BY current_product_id,"
            " related_product_id HAVING count(*) > 1) d"
        )
        == 0
    )
    assert await overview_conn.fetchval("SELECT min(related_product_id) FROM related") > 0
    # No photo url kept a stray quote, and every style has 1-8 siblings.
    assert (
        await overview_conn.fetchval(
            "SELECT count(*) FROM photos WHERE url LIKE '%\"%' OR thumbnail_url LIKE '%\"%'"
        )
        == 0
    )
    per_product = await overview_conn.fetch("SELECT count(*) FROM styles GROUP BY product_id")
    assert {r[0] for r in per_product} <= set(range(1, 9))


async def test_documents_are_the_live_answers_byte_for_byte(
    tmp_path, overview_db, overview_conn, redis_server
):
    """Every product gets a prebuilt detail, styles and related answer, equal to
    what the live queries would send (generated data: products without styles,
    styles without photos or skus, sales, null photo urls)."""
    generator.generate(tmp_path / "a", scale=0.0002, seed=11)
    with (tmp_path / "a" / "product.csv").open("a") as products:  # no styles, no related
        products.write('9000001,"Bare","","","Misc","10"\n')
    await loader.load(
        overview_db, tmp_path / "a", tmp_path / "report", redis_url=redis_server.url, quiet=True
    )
    documents = await overview_conn.fetch(
        "SELECT product_id, detail, styles, related FROM product_documents ORDER BY 1"
    )
    ids = [r[0] for r in await overview_conn.fetch("SELECT id FROM products ORDER BY id")]
    assert [d[0] for d in documents] == ids
    for product_id, detail, styles, related in documents:
        live_detail = await overview_conn.fetchrow(queries.PRODUCT_DETAIL, product_id)
        live_styles = await overview_conn.fetch(queries.PRODUCT_STYLES, product_id)
        live_related = await overview_conn.fetchrow(queries.PRODUCT_RELATED, product_id)
        assert detail == queries.detail_body(live_detail)
        assert styles == queries.styles_body(product_id, live_styles)
        assert related == queries.related_body(live_related[0])
    shapes = {(len(json.loads(d[2])["results"]) > 0, d[3] != b"[]") for d in documents}
    # with and without styles, with and without related
    assert shapes >= {(False, False), (True, False), (True, True)}
