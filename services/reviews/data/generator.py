"""Synthetic Ratings & Reviews export, with the real export's headers and quirks.

    python -m services.reviews.data.generator --scale 0.01 --out data/reviews --seed 1

Writes reviews.csv, reviews_photos.csv, characteristics.csv,
characteristic_reviews.csv and generator.json (counts, and the reviews given
an out-of-range rating on purpose with the rows the loader must reject with
them). Scale 1.0 is the full export (5,774,952 reviews, ~1M products).

Speed: the parent draws the plan (which product has how many reviews and
characteristics, ids with gaps, ratings) into compact arrays; the four files
are then written by forked workers that share those arrays, each line built
from precomputed, already-quoted text pools with one f-string.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from itertools import accumulate, combinations
from pathlib import Path
from typing import Any

from services.common.data.generating import (
    EMAIL_DOMAINS,
    NULL_FIELD,
    CsvOut,
    ExportGenerator,
    PlanSlot,
    ids_with_gaps,
    paragraph,
    pick_table,
    quote,
    rng_for,
    sentence,
    skewed_counts,
    write_photo_rows,
)

from .columns import HEADERS

FULL = {
    "products": 1_000_011,
    "reviews": 5_774_952,
    "photos": 2_742_540,
    "characteristics": 3_347_679,
    "characteristic_reviews": 19_327_575,
}
CHARACTERISTIC_NAMES = ("Fit", "Length", "Comfort", "Quality", "Size", "Width")
# 3-6 characteristics per product, averaging 3.35 like the export.
CHARS_PER_PRODUCT = pick_table([0.75, 0.17, 0.05, 0.03], [3, 4, 5, 6])
RATING_WEIGHTS = [0.08, 0.07, 0.15, 0.30, 0.40]
BAD_RATING_RATE = 1e-5  # "a few" ratings outside 1-5: 58 at scale 1.0
BAD_RATINGS = (0, 6, 7, 9)
# 0.47 photos per review on average (2,742,540 / 5,774,952).
PHOTOS_PER_REVIEW = pick_table([0.737, 0.14, 0.07, 0.03, 0.015, 0.008])
DATE_FROM_MS = 1_588_291_200_000  # 2020-05-01
DATE_SPAN_MS = 275 * 86_400_000  # to early 2021


@dataclass
class Plan:
    """Everything the four files must agree on, indexed by product/review
    position (product id = position + 1)."""

    seed: int
    products: int
    char_start: array  # product p's characteristics are char_ids[char_start[p]:char_start[p+1]]
    char_ids: array
    review_start: array  # same layout for reviews
    review_ids: array
    ratings: bytearray  # per review position; 0/6/7/9 = deliberately invalid
    bad: list[int]  # review positions with an invalid rating


PLAN = PlanSlot()  # set before forking workers, shared copy-on-write


def make_plan(scale: float, seed: int) -> Plan:
    products = max(1, round(FULL["products"] * scale))
    reviews = round(FULL["reviews"] * scale)
    rnd = rng_for(seed, "characteristics-per-product").random
    counts = bytes(CHARS_PER_PRODUCT[int(rnd() * 1024)] for _ in range(products))
    char_start = array("i", accumulate(counts, initial=0))
    char_ids = ids_with_gaps(rng_for(seed, "characteristic-ids"), char_start[-1])
    per_product = skewed_counts(rng_for(seed, "reviews-per-product"), products, reviews)
    review_start = array("i", accumulate(per_product, initial=0))
    review_ids = ids_with_gaps(rng_for(seed, "review-ids"), reviews)
    rating_table = pick_table(RATING_WEIGHTS, [1, 2, 3, 4, 5])
    rng = rng_for(seed, "ratings")
    rnd = rng.random
    ratings = bytearray(rating_table[int(rnd() * 1024)] for _ in range(reviews))
    bad = sorted(rng.sample(range(reviews), round(reviews * BAD_RATING_RATE)))
    for pos in bad:
        ratings[pos] = BAD_RATINGS[int(rnd() * len(BAD_RATINGS))]
    return Plan(seed, products, char_start, char_ids, review_start, review_ids, ratings, bad)


# --------------------------------------------------------------------------- text pools

_WORDS = (
    "great fit comfortable soft fabric color true to size runs small large love "
    "these this product quality stitching wash washed shrink perfect summer winter "
    "wear everyday price value would buy again recommend friends returned exchange "
    "material feels cheap sturdy stylish compliments shipping fast slow length sleeves "
    "waist tight loose stretchy breathable warm cozy looks picture online better worse "
    "expected okay fine really pretty nice awesome terrible disappointed happy"
).split()
_FIRST = (
    "funtime shortandsweeet jbilas bigbrother mymainstreammother fashionista "
    "kimfromtheblock thelastsamurai ceo figuringitout yankeelover sillyguy "
    "jackson11 chris mia_b alex99 sam_the_man queenbee"
).split()


def _summaries(seed: int, n: int) -> list[str]:
    rng = rng_for(seed, "summary-pool")
    rnd = rng.random
    out = []
    for k in range(n):
        text = sentence(_WORDS, rnd, 2 + int(rnd() * 6))
        if k % 7 == 0:
            text += ", honestly"  # a comma inside a quoted field
        if k % 11 == 0:
            text = f'The "{text}" one'  # doubled quotes in the file
        out.append(quote(text[:60]))
    return out


def _bodies(seed: int, n: int) -> list[str]:
    rng = rng_for(seed, "body-pool")
    rnd = rng.random
    out = []
    for k in range(n):
        target = 50 + int(rnd() ** 5 * 950)  # 50-1000 characters, mostly short (mean ~210)
        text = paragraph(_WORDS, rng, target, min_words=4)
        if k % 5 == 0:
            text = text.replace(" and", ',\n\nand "honestly"', 1)  # newline + quotes
        if k % 9 == 0:
            text = f'"{text}" said nobody, ever'
        text = text[:1000]
        if len(text) < 50:
            text = text.ljust(50, ".")
        out.append(quote(text))
    return out


def _people(seed: int, n: int) -> tuple[list[str], list[str]]:
    rng = rng_for(seed, "people-pool")
    names, emails = [], []
    for _ in range(n):
        name = rng.choice(_FIRST) + (str(rng.randrange(1000)) if rng.random() < 0.6 else "")
        names.append(quote(name))
        emails.append(quote(f"{name}@{rng.choice(EMAIL_DOMAINS)}"))
    return names, emails


def _responses(seed: int) -> list[str]:
    """A lookup table: mostly bare null, some seller replies, a few empty strings."""
    rng = rng_for(seed, "response-pool")
    replies = [
        quote(t)
        for t in (
            "Thank you for your feedback!",
            "We're sorry to hear that, please contact us.",
            'Glad you like the "Camo Onesie"!',
            "We have passed this on to our team, thanks",
        )
    ]
    table = [NULL_FIELD] * 1024
    for k in range(0, 1024, 6):
        table[k] = replies[rng.randrange(len(replies))]
    table[1] = table[500] = quote("")  # empty string, not NULL
    return table


# --------------------------------------------------------------------------- writers


def write_characteristics(out: Path, position: int = 0) -> dict[str, int]:
    plan: Plan = PLAN.get()
    rnd = rng_for(plan.seed, "characteristic-names").random
    quoted = {n: quote(n) for n in CHARACTERISTIC_NAMES}
    combos = {
        k: [[quoted[n] for n in c] for c in combinations(CHARACTERISTIC_NAMES, k)]
        for k in range(1, len(CHARACTERISTIC_NAMES) + 1)
    }
    cs, ids = plan.char_start, plan.char_ids
    with CsvOut(
        out / "characteristics.csv", HEADERS["characteristics.csv"], len(ids), position
    ) as w:
        add = w.lines.append
        for p in range(plan.products):
            a, b = cs[p], cs[p + 1]
            options = combos[b - a]
            names = options[int(rnd() * len(options))]
            product = p + 1
            for k in range(a, b):
                add(f"{ids[k]},{product},{names[k - a]}\n")
            w.flush()
    return w.counts()


def write_reviews(out: Path, position: int = 0) -> dict[str, int]:
    plan: Plan = PLAN.get()
    seed = plan.seed
    rng = rng_for(seed, "reviews")
    rnd, bits = rng.random, rng.getrandbits
    summaries, bodies = _summaries(seed, 2048), _bodies(seed, 4096)
    names, emails = _people(seed, 4096)
    responses = _responses(seed)
    recommend = pick_table([0.22, 0.78], ["false", "true"])
    reported = pick_table([0.97, 0.03], ["false", "true"])
    helpful = pick_table([30, 20, 12, 8, 6, 5, 4, 3, 2, 2, 2, 1, 1, 1, 1, 1, 1])
    rs, ids, ratings = plan.review_start, plan.review_ids, plan.ratings
    with CsvOut(out / "reviews.csv", HEADERS["reviews.csv"], len(ids), position) as w:
        add = w.lines.append
        for p in range(plan.products):
            product = p + 1
            for k in range(rs[p], rs[p + 1]):
                add(
                    f"{ids[k]},{product},{ratings[k]},{DATE_FROM_MS + int(rnd() * DATE_SPAN_MS)},"
                    f"{summaries[bits(11)]},{bodies[bits(12)]},"
                    f"{recommend[int(rnd() * 1024)]},{reported[int(rnd() * 1024)]},"
                    f"{names[bits(12)]},{emails[bits(12)]},{responses[bits(10)]},"
                    f"{helpful[int(rnd() * 1024)]}\n"
                )
            w.flush()
    return w.counts()


def write_photos(out: Path, position: int = 0) -> dict[str, int]:
    plan: Plan = PLAN.get()
    counts, bad_photos, _ = write_photo_rows(
        out / "reviews_photos.csv",
        HEADERS["reviews_photos.csv"],
        position,
        plan.seed,
        plan.review_ids,
        PHOTOS_PER_REVIEW,
        0.475,
        set(plan.bad),
    )
    return {**counts, "bad_photos": bad_photos}


def write_characteristic_reviews(out: Path, position: int = 0) -> dict[str, int]:
    plan: Plan = PLAN.get()
    rnd = rng_for(plan.seed, "characteristic-scores").random
    # A score near the review's rating: values[rating][int(random * 1024)].
    noise = pick_table([1, 3, 8, 3, 1], [-2, -1, 0, 1, 2])
    values = [[str(min(5, max(1, r + d))) for d in noise] for r in range(10)]
    cs, cids = plan.char_start, plan.char_ids
    rs, rids, ratings = plan.review_start, plan.review_ids, plan.ratings
    bad = set(plan.bad)
    bad_scores = 0
    nxt = 1
    with CsvOut(
        out / "characteristic_reviews.csv",
        HEADERS["characteristic_reviews.csv"],
        round(len(rids) * 3.35),
        position,
    ) as w:
        add = w.lines.append
        for p in range(plan.products):
            a, b = rs[p], rs[p + 1]
            if a == b:
                continue
            chars = [f",{cid}," for cid in cids[cs[p] : cs[p + 1]]]
            for k in range(a, b):
                review, table = rids[k], values[ratings[k]]
                for c in chars:
                    add(f"{nxt}{c}{review},{table[int(rnd() * 1024)]}\n")
                    nxt += 2 if rnd() < 0.01 else 1
                if k in bad:
                    bad_scores += len(chars)
            w.flush()
    return w.counts(bad_scores=bad_scores)


def _quirks(plan: Plan, counts: dict[str, int]) -> dict[str, Any]:
    """What the loader must reject: reviews with ratings outside 1-5 and their
    photos and characteristic scores."""
    bad_ids = [plan.review_ids[k] for k in plan.bad]
    return {
        "bad_rating_review_ids": bad_ids,
        "expected_rejects": {
            "reviews.csv": len(bad_ids),
            "reviews_photos.csv": counts["bad_photos"],
            "characteristic_reviews.csv": counts["bad_scores"],
            "characteristics.csv": 0,
        },
    }


generate = ExportGenerator(
    "reviews",
    __doc__,
    HEADERS,
    make_plan,
    PLAN,
    [write_reviews, write_characteristic_reviews, write_characteristics, write_photos],
    _quirks,
)
main = generate.main

if __name__ == "__main__":
    main()
