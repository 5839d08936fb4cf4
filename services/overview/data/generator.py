"""Synthetic product catalogue export, with the real export's headers and quirks.

    python -m services.overview.data.generator --scale 0.01 --out data/overview --seed 1

Writes product.csv, features.csv, styles.csv, photos.csv, skus.csv,
related.csv, cart.csv and generator.json (row counts, and the quirky rows the
loader must repair or reject). Scale 1.0 is the full export (~26M rows).

Shapes: product ids 1..N without gaps (the reviews and Q&A exports refer to
them), 1-8 styles per product (mean ~1.96), ~2.9 photos and ~5.8 skus per
style with a few styles having none, ~2.2 features and ~4.5 related products
per product; every other id sequence has gaps.

Quirks: camelCase `productId`/`styleId` headers, `default_style` as 1/0 and
now and then true/false, bare `null` sale prices, feature values and photo
urls, quoted text with commas, doubled quotes and newlines, photo rows whose
thumbnail_url lacks its closing quote, related rows pointing to product 0
and duplicate related pairs.

Speed: the parent draws the plan (styles per product, photos and skus per
style, ids) into compact arrays; forked workers write the files from those
arrays, each line one f-string over pre-quoted text pools.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any

from services.common.data.generating import (
    NULL_FIELD,
    CsvOut,
    ExportGenerator,
    PlanSlot,
    ids_with_gaps,
    pick_table,
    quote,
    rng_for,
    sentence,
)

from .columns import HEADERS

FULL_PRODUCTS = 1_000_011
FULL_CART_ROWS = 20_000  # "small" in DATA.md; our choice
# 1,958,102 styles over 1,000,011 products: mean 1.96, 1-8 each.
STYLES_PER_PRODUCT = pick_table([0.52, 0.26, 0.10, 0.05, 0.03, 0.02, 0.01, 0.01], range(1, 9))
# ~2.89 photos and ~5.78 skus per style; a few styles have none.
PHOTOS_PER_STYLE = pick_table([0.04, 0.12, 0.18, 0.40, 0.15, 0.06, 0.03, 0.02])
SKUS_PER_STYLE = pick_table([0.02, 0.02, 0.03, 0.05, 0.08, 0.15, 0.30, 0.20, 0.09, 0.06])
# ~2.22 features and ~4.51 related rows per product.
FEATURES_PER_PRODUCT = pick_table([0.06, 0.2, 0.35, 0.25, 0.1, 0.04])
RELATED_PER_PRODUCT = pick_table([0.05, 0.05, 0.1, 0.1, 0.15, 0.2, 0.15, 0.1, 0.1])

# Quirk rates (per row), and a floor so that even a tiny scale has each quirk.
BROKEN_QUOTE_RATE = 1 / 20_000
NULL_URL_RATE = 1 / 5_000
RELATED_ZERO_RATE = 0.004
RELATED_DUPLICATE_RATE = 0.004
TRUE_FALSE_FLAG_RATE = 0.01


@dataclass
class Plan:
    """What the files must agree on. Product id = position + 1; product p's
    styles are style_ids[style_start[p]:style_start[p+1]]."""

    seed: int
    products: int
    style_start: array
    style_ids: array
    photo_counts: bytes  # per style position
    sku_counts: bytes


PLAN = PlanSlot()  # set before forking workers, shared copy-on-write


def make_plan(scale: float, seed: int) -> Plan:
    products = max(1, round(FULL_PRODUCTS * scale))
    rnd = rng_for(seed, "styles-per-product").random
    style_start = array(
        "i", accumulate((STYLES_PER_PRODUCT[int(rnd() * 1024)] for _ in range(products)), initial=0)
    )
    styles = style_start[-1]
    style_ids = ids_with_gaps(rng_for(seed, "style-ids"), styles)
    rnd = rng_for(seed, "photos-per-style").random
    photo_counts = bytes(PHOTOS_PER_STYLE[int(rnd() * 1024)] for _ in range(styles))
    rnd = rng_for(seed, "skus-per-style").random
    sku_counts = bytes(SKUS_PER_STYLE[int(rnd() * 1024)] for _ in range(styles))
    return Plan(seed, products, style_start, style_ids, photo_counts, sku_counts)


def _forced(n: int, rate: float, rnd: Any, first: int) -> set[int]:
    """Row positions carrying a quirk: about n * rate of them, at least one
    (position `first`, or the last row in a tiny file)."""
    picks = {int(rnd() * n) for _ in range(round(n * rate))} if n else set()
    if n:
        picks.add(min(first, n - 1))
    return picks


# --------------------------------------------------------------------------- text pools

_ADJECTIVES = (
    "Camo Onesie",
    "Bright Future Sunglasses",
    "Morning Joggers",
    "Slacker's Slacks",
    "Heir Force Ones",
    "Pumped Up Kicks",
    "Blues Suede Shoes",
    "YEasy 350",
    "Summer Shoes",
    "Infinity Stone",
    "Manuel Jacket",
    "Oswald Cap",
)
_WORDS = (
    "blend in to your crowd you've got to wear shades fly higher than ever "
    "comfortable for everything durable lightweight make yourself a little "
    "taller stylish and practical the so fatigues will wake you up and fit "
    "you in this one of a kind waterproof all weather breathable"
).split()
_CATEGORIES = (
    "Jackets",
    "Accessories",
    "Pants",
    "Kicks",
    "Dress Shoes",
    "Heels",
    "Shorts",
    "Sweatpants",
    "Tops",
    "Shirt",
    "Cap",
    "Socks",
    "Suit",
    "Blazer",
)
_COLORS = (
    "Forest Green & Black",
    "Desert Brown & Tan",
    "Ocean Blue & Grey",
    "Digital Red",
    "Black",
    "White",
    "Sky Blue",
    "Dark Grey & Black",
    "Olive Green",
    "Sun Yellow",
    "Hot Pink",
    "Cream",
    "Navy",
    "Maroon",
    "Teal",
    "Lavender",
    "Charcoal",
)
_FEATURES = {
    "Fabric": ("Canvas", "100% Cotton", "Double Stitch", "Silk", "Chiffon", "Denim"),
    "Buttons": ("Brass", "Wooden", "Plastic", "Gold Plated"),
    "Lenses": ("Ultrasheen", "Polarized", "UV Protection"),
    "UV Protection": ("null", "true"),
    "Frame": ("LightCompose", "DuraResin", "Metal"),
    "Sole": ("Rubber", "FullControlSkin", "ControlSupport Arch Bridge"),
    "Material": ("FullControlSkin", "Suede", "Leather", "Mesh"),
    "Stitching": ("Double Stitch", "Cross Stitch"),
    "Green Leaf Certified": ("null",),
    "Non-GMO": ("null",),
    "Cut": ("Loose", "Skinny", "Straight", "Bootcut"),
    "Lifetime Guarantee": ("null",),
}
_CLOTHING_SIZES = ("XS", "S", "M", "L", "XL", "XXL", "XXXL", "One Size", "XXS")
_SHOE_SIZES = ("7", "7.5", "8", "8.5", "9", "9.5", "10", "10.5", "11", "11.5", "12")


def _products_pool(seed: int, n: int) -> list[str]:
    """Pre-quoted `name,slogan,description,category` prefixes."""
    rng = rng_for(seed, "product-pool")
    rnd = rng.random
    out = []
    for k in range(n):
        name = f"{rng.choice(_ADJECTIVES)} {k}"
        slogan = sentence(_WORDS, rnd, 3 + int(rnd() * 6)) + "."
        description = " ".join(
            sentence(_WORDS, rnd, 6 + int(rnd() * 14)) + "." for _ in range(1 + int(rnd() * 4))
        )
        if k % 5 == 0:
            description = description.replace(" ", ", ", 1)  # a comma inside quotes
        if k % 7 == 0:
            description = f'The "{name}" says it all. ' + description  # doubled quotes
        if k % 31 == 0:
            description += "\nSecond line."  # a newline inside quotes
        slogan = "" if k % 97 == 0 else slogan
        out.append(
            f"{quote(name)},{quote(slogan)},{quote(description)},{quote(rng.choice(_CATEGORIES))}"
        )
    return out


def _photo_urls(seed: int, n: int) -> list[tuple[str, str]]:
    """(url, thumbnail_url) pairs, unquoted."""
    rng = rng_for(seed, "photo-pool")
    out = []
    for _ in range(n):
        base = (
            f"https://images.unsplash.com/photo-{1_500_000_000_000 + rng.randrange(10**11)}"
            f"-{rng.getrandbits(48):012x}?ixlib=rb-1.2.1&ixid=eyJhcHBfaWQiOjEyMDd9"
            f"&auto=format&fit=crop"
        )
        out.append((f"{base}&w={rng.randrange(600, 2000)}&q=80", f"{base}&w=300&q=80"))
    return out


# --------------------------------------------------------------------------- writers


def write_products(out: Path, position: int = 0) -> dict[str, Any]:
    plan: Plan = PLAN.get()
    rng = rng_for(plan.seed, "products")
    rnd = rng.random
    pool = _products_pool(plan.seed, 4096)
    prices = pick_table([1] * 10, [str(p) for p in (10, 25, 40, 59, 69, 99, 120, 140, 170, 500)])
    with CsvOut(out / "product.csv", HEADERS["product.csv"], plan.products, position) as w:
        add = w.lines.append
        for p in range(plan.products):
            add(f"{p + 1},{pool[rng.getrandbits(12)]},{prices[int(rnd() * 1024)]}\n")
            w.flush()
    return w.counts()


def write_features(out: Path, position: int = 0) -> dict[str, Any]:
    plan: Plan = PLAN.get()
    rng = rng_for(plan.seed, "features")
    rnd = rng.random
    names = list(_FEATURES)
    quoted = {n: quote(n) for n in names}
    values = {n: [v if v == NULL_FIELD else quote(v) for v in _FEATURES[n]] for n in names}
    nxt = 1
    with CsvOut(
        out / "features.csv", HEADERS["features.csv"], round(plan.products * 2.22), position
    ) as w:
        add = w.lines.append
        for p in range(plan.products):
            for _ in range(FEATURES_PER_PRODUCT[int(rnd() * 1024)]):
                name = names[int(rnd() * len(names))]
                options = values[name]
                add(f"{nxt},{p + 1},{quoted[name]},{options[int(rnd() * len(options))]}\n")
                nxt += 2 if rnd() < 0.01 else 1
            w.flush()
    return w.counts()


def write_styles(out: Path, position: int = 0) -> dict[str, Any]:
    plan: Plan = PLAN.get()
    rng = rng_for(plan.seed, "styles")
    rnd = rng.random
    names = [quote(c) for c in _COLORS]
    originals = [str(p) for p in (40, 59, 69, 99, 120, 140, 170, 500)]
    starts, ids = plan.style_start, plan.style_ids
    with CsvOut(out / "styles.csv", HEADERS["styles.csv"], len(ids), position) as w:
        add = w.lines.append
        for p in range(plan.products):
            product = p + 1
            first = starts[p]
            # Most products have exactly one default style; a few have none.
            default_at = first if rnd() < 0.97 else -1
            for k in range(first, starts[p + 1]):
                original = originals[int(rnd() * len(originals))]
                sale = str(int(int(original) * (0.5 + rnd() * 0.4))) if rnd() < 0.25 else NULL_FIELD
                flag = k == default_at
                if rnd() < TRUE_FALSE_FLAG_RATE:
                    text = "true" if flag else "false"
                else:
                    text = "1" if flag else "0"
                add(
                    f"{ids[k]},{product},{names[int(rnd() * len(names))]},{sale},"
                    f"{original},{text}\n"
                )
            w.flush()
    return w.counts()


def write_photos(out: Path, position: int = 0) -> dict[str, Any]:
    plan: Plan = PLAN.get()
    rng = rng_for(plan.seed, "photos")
    rnd = rng.random
    pairs = _photo_urls(plan.seed, 4096)
    rows = [f'"{u}","{t}"\n' for u, t in pairs]
    broken_rows = [f'"{u}","{t}\n' for u, t in pairs]  # thumbnail_url never closed
    counts, ids = plan.photo_counts, plan.style_ids
    total = sum(counts)
    broken = _forced(total, BROKEN_QUOTE_RATE, rng_for(plan.seed, "photos-broken").random, 7)
    nulls = _forced(total, NULL_URL_RATE, rng_for(plan.seed, "photos-null").random, 3)
    broken -= nulls
    nxt, row = 1, 0
    with CsvOut(out / "photos.csv", HEADERS["photos.csv"], total, position) as w:
        add = w.lines.append
        for s, n in enumerate(counts):
            style = ids[s]
            for _ in range(n):
                k = rng.getrandbits(12)
                if row in broken:
                    add(f"{nxt},{style},{broken_rows[k]}")
                elif row in nulls:
                    u = pairs[k][0]
                    add(
                        f'{nxt},{style},"{u}",{NULL_FIELD}\n'
                        if row % 2
                        else f"{nxt},{style},{NULL_FIELD},{NULL_FIELD}\n"
                    )
                else:
                    add(f"{nxt},{style},{rows[k]}")
                nxt += 2 if rnd() < 0.01 else 1
                row += 1
            w.flush()
    return w.counts(photos_broken_quote=len(broken), photos_null_url=len(nulls))


def write_skus(out: Path, position: int = 0) -> dict[str, Any]:
    """skus.csv, and cart.csv with it: cart rows must name real skus in stock,
    and only this writer knows the sku ids and quantities."""
    plan: Plan = PLAN.get()
    rng = rng_for(plan.seed, "skus")
    rnd = rng.random
    clothing = [quote(s) for s in _CLOTHING_SIZES]
    shoes = [quote(s) for s in _SHOE_SIZES]
    quantities = [str(q) for q in range(64)]
    counts, ids = plan.sku_counts, plan.style_ids
    total = sum(counts)
    cart_rows = max(20, round(FULL_CART_ROWS * plan.products / FULL_PRODUCTS))
    cart_rate = min(1.0, 2 * cart_rows / max(1, total))
    cart_pick = rng_for(plan.seed, "cart-skus").random
    in_stock: list[int] = []
    nxt = 1
    with CsvOut(out / "skus.csv", HEADERS["skus.csv"], total, position) as w:
        add = w.lines.append
        for s, n in enumerate(counts):
            if not n:
                continue
            style = ids[s]
            sizes = clothing if rnd() < 0.7 else shoes
            for k in range(n):
                q = rng.getrandbits(6)
                add(f"{nxt},{style},{sizes[k]},{quantities[q]}\n")
                if q and cart_pick() < cart_rate:
                    in_stock.append(nxt)
                nxt += 2 if rnd() < 0.01 else 1
            w.flush()
    return {**w.counts(), **_write_cart(out, plan.seed, in_stock, cart_rows)}


def _write_cart(out: Path, seed: int, in_stock: list[int], rows: int) -> dict[str, Any]:
    """Cart rows: one unit of a sku per row (the `product_id` column holds sku
    ids), active 1/0. A session takes a given sku at most once, so no session
    holds more than the stock of a sku (all of these have quantity >= 1)."""
    rng = rng_for(seed, "cart")
    rnd = rng.random
    sessions = max(5, rows // 4)
    seen: set[tuple[int, int]] = set()
    with CsvOut(out / "cart.csv", HEADERS["cart.csv"], rows) as w:
        lines = w.lines  # written at the end: a few thousand at most
        for _ in range(rows * 2):
            if len(lines) >= rows or not in_stock:
                break
            session = 1 + int(rnd() * sessions)
            sku = in_stock[int(rnd() * len(in_stock))]
            if (session, sku) in seen:
                continue
            seen.add((session, sku))
            lines.append(f"{len(lines) + 1},{session},{sku},{1 if rnd() < 0.9 else 0}\n")
    return w.counts()


def write_related(out: Path, position: int = 0) -> dict[str, Any]:
    plan: Plan = PLAN.get()
    rng = rng_for(plan.seed, "related")
    rnd = rng.random
    products = plan.products
    zeros = duplicates = 0
    nxt = 1
    with CsvOut(out / "related.csv", HEADERS["related.csv"], round(products * 4.51), position) as w:
        add = w.lines.append
        for p in range(products):
            current = p + 1
            chosen: list[int] = []
            for _ in range(RELATED_PER_PRODUCT[int(rnd() * 1024)]):
                r = rnd()
                if r < RELATED_ZERO_RATE or (current == 1 and not zeros):
                    target = 0
                    zeros += 1
                elif chosen and (
                    r < RELATED_ZERO_RATE + RELATED_DUPLICATE_RATE
                    or (current == 1 and not duplicates)
                ):
                    target = chosen[int(rnd() * len(chosen))]
                    duplicates += 1
                else:
                    target = 1 + int(rnd() * products)
                    if target in chosen or target == current:
                        continue  # keep accidental repeats out: only planted ones count
                    chosen.append(target)
                add(f"{nxt},{current},{target}\n")
                nxt += 2 if rnd() < 0.01 else 1
            w.flush()
    return w.counts(related_zero=zeros, related_duplicate=duplicates)


def _quirks(plan: Plan, counts: dict[str, int]) -> dict[str, Any]:
    """The quirks planted in the files: the loader must repair the first and
    reject the related ones."""
    return {
        "repairable": {"photos.csv": counts["photos_broken_quote"]},
        "null_photo_rows": counts["photos_null_url"],
        "expected_rejects": {
            "related.csv": counts["related_zero"] + counts["related_duplicate"],
        },
    }


generate = ExportGenerator(
    "overview",
    __doc__,
    HEADERS,
    make_plan,
    PLAN,
    [write_skus, write_photos, write_related, write_products, write_features, write_styles],
    _quirks,
)
main = generate.main

if __name__ == "__main__":
    main()
