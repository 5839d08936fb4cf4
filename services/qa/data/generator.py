"""Synthetic Questions & Answers export, with the real export's headers and quirks.

    python -m services.qa.data.generator --scale 0.01 --out data/qa --seed 1

Writes questions.csv, answers.csv, answers_photos.csv and generator.json
(counts, and the rows the loader must reject). Scale 1.0 is the full export
(3,518,963 questions, 6,879,306 answers, 2,063,759 photos over ~1M products).

Quirks reproduced: `0`/`1` booleans, epoch-millisecond `date_written`, every
string quoted with commas, doubled quotes and newlines inside bodies, a bare
`null` for a few photo urls, id gaps. Deliberate errors the loader must
reject: a few answers whose question does not exist, and with them their
photos (listed in generator.json).

Skew: about a third of the products have no questions, most have a few, and
one in ~2,000 has hundreds; a quarter of the questions have no answers, most
a few, and one in 500 has dozens.

Speed: the parent draws the plan (counts, ids with gaps, question dates)
into compact arrays; the files are then written by forked workers sharing
those arrays, each line one f-string over precomputed, already-quoted pools.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any

from services.common.data.generating import (
    EMAIL_DOMAINS,
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
    "questions": 3_518_963,
    "answers": 6_879_306,
    "photos": 2_063_759,
}
# ~0.30 photos per answer (2,063,759 / 6,879,306).
PHOTOS_PER_ANSWER = pick_table([0.83, 0.10, 0.035, 0.02, 0.01, 0.005])
ORPHAN_ANSWER_RATE = 1e-5  # answers pointing at a question that does not exist
NULL_URL_RATE = 0.001  # photos whose url is a bare null (loaded as NULL)
DATE_FROM_MS = 1_514_764_800_000  # 2018-01-01
DATE_SPAN_MS = 1_000 * 86_400_000  # to late 2020
ANSWER_DELAY_MS = 120 * 86_400_000  # an answer comes within four months


@dataclass
class Plan:
    """Everything the three files must agree on, by position: product id =
    position + 1; product p's questions are question_ids[q_start[p]:q_start[p+1]],
    question k's answers answer_ids[a_start[k]:a_start[k+1]]."""

    seed: int
    products: int
    q_start: array
    question_ids: array
    question_dates: array  # epoch ms per question position
    a_start: array
    answer_ids: array
    orphans: list[int]  # answer positions given a question id that does not exist
    orphan_question_base: int  # orphans point at base + n, past every real question


PLAN = PlanSlot()  # set before forking workers, shared copy-on-write


def make_plan(scale: float, seed: int) -> Plan:
    products = max(1, round(FULL["products"] * scale))
    n_questions = round(FULL["questions"] * scale)
    n_answers = round(FULL["answers"] * scale)
    per_product = skewed_counts(
        rng_for(seed, "questions-per-product"),
        products,
        n_questions,
        zero_share=0.35,
        heavy_share=0.0005,
        heavy_weight=(30, 150),
    )
    q_start = array("i", accumulate(per_product, initial=0))
    question_ids = ids_with_gaps(rng_for(seed, "question-ids"), n_questions)
    rnd = rng_for(seed, "question-dates").random
    question_dates = array(
        "q", (DATE_FROM_MS + int(rnd() * DATE_SPAN_MS) for _ in range(n_questions))
    )
    per_question = skewed_counts(
        rng_for(seed, "answers-per-question"),
        n_questions,
        n_answers,
        zero_share=0.25,
        heavy_share=0.002,
        heavy_weight=(8, 20),
    )
    a_start = array("i", accumulate(per_question, initial=0))
    answer_ids = ids_with_gaps(rng_for(seed, "answer-ids"), n_answers)
    rng = rng_for(seed, "orphans")
    # At least one at any scale, so that small loads exercise the reject path too.
    n_orphans = min(n_answers, max(1, round(n_answers * ORPHAN_ANSWER_RATE)))
    orphans = sorted(rng.sample(range(n_answers), n_orphans))
    base = (question_ids[-1] if n_questions else 0) + 1000
    return Plan(
        seed, products, q_start, question_ids, question_dates, a_start, answer_ids, orphans, base
    )


# --------------------------------------------------------------------------- text pools

_QUESTION_OPENERS = (
    "What fabric is the",
    "Does the",
    "How does the",
    "Is the",
    "Can you wash the",
    "Why is the",
    "Will the",
    "Where is the",
    "How long does the",
    "Would you recommend the",
)
_THINGS = (
    "top",
    "jacket",
    "fit",
    "color",
    "zipper",
    "lining",
    "sizing",
    "material",
    "strap",
    "sole",
    "hood",
    "pocket",
    "seam",
    "collar",
    "waistband",
)
_WORDS = (
    "yes no it runs small large true to size the fabric is soft and warm washed fine "
    "cold water only mine shrank a little after drying really comfortable for everyday "
    "wear supposedly suede but I think its synthetic we are selling it here without any "
    "markup from the middleman great question color is darker than the picture"
).split()
_NAMES = (
    "yankeelover sillyguy jbilas metslover williamsmith funnygirl thelastsamurai "
    "ceo figuringitout mia_b alex99 sam_the_man queenbee dschulman cleopatra "
    "iluvcatz bigbrother"
).split()


def _question_bodies(seed: int, n: int) -> list[str]:
    rng = rng_for(seed, "question-pool")
    rnd = rng.random
    out = []
    for k in range(n):
        text = f"{rng.choice(_QUESTION_OPENERS)} {rng.choice(_THINGS)}"
        if rnd() < 0.3:
            text += " " + sentence(_WORDS, rnd, 3 + int(rnd() * 20)).lower()
        text += "?"
        if k % 7 == 0:
            text = text.replace(" the", ", the", 1)  # a comma inside a quoted field
        if k % 11 == 0:
            text = f'Is the "{rng.choice(_THINGS)}" real? {text}'  # doubled quotes
        if k % 13 == 0:
            text += "\nThanks!"  # a newline inside a quoted field
        out.append(quote(text[:1000]))
    return out


def _answer_bodies(seed: int, n: int) -> list[str]:
    rng = rng_for(seed, "answer-pool")
    rnd = rng.random
    out = []
    for k in range(n):
        # Mostly a line or two (the export's answers average ~60 characters),
        # now and then a long one, up to 1000.
        target = 5 + int(rnd() * 60) if rnd() < 0.96 else 100 + int(rnd() * 900)
        text = paragraph(_WORDS, rng, target, min_words=2)
        if k % 5 == 0:
            text = text.replace(" and", ',\n\nand "honestly"', 1)  # newlines + quotes
        if k % 9 == 0:
            text = f'"{text}" - the tag'
        out.append(quote(text[:1000]))
    return out


def _people(
    seed: int, label: str, n: int, seller_share: float = 0.0
) -> tuple[list[str], list[str]]:
    rng = rng_for(seed, label)
    names, emails = [], []
    for _ in range(n):
        if rng.random() < seller_share:
            name = "Seller"
        else:
            name = rng.choice(_NAMES) + (str(rng.randrange(1000)) if rng.random() < 0.6 else "")
        names.append(quote(name))
        emails.append(quote(f"{name.lower()}@{rng.choice(EMAIL_DOMAINS)}"))
    return names, emails


# Reported: 0/1 in these files (the reviews export says true/false).
_REPORTED = pick_table([0.97, 0.03], ["0", "1"])
_HELPFUL = pick_table(
    [30, 20, 12, 8, 6, 5, 4, 3, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
)


# --------------------------------------------------------------------------- writers


def write_questions(out: Path, position: int = 0) -> dict[str, int]:
    plan: Plan = PLAN.get()
    rng = rng_for(plan.seed, "questions")
    rnd, bits = rng.random, rng.getrandbits
    bodies = _question_bodies(plan.seed, 4096)
    names, emails = _people(plan.seed, "askers", 4096)
    reported, helpful = _REPORTED, _HELPFUL
    qs, ids, dates = plan.q_start, plan.question_ids, plan.question_dates
    with CsvOut(out / "questions.csv", HEADERS["questions.csv"], len(ids), position) as w:
        add = w.lines.append
        for p in range(plan.products):
            product = p + 1
            for k in range(qs[p], qs[p + 1]):
                who = bits(12)
                add(
                    f"{ids[k]},{product},{bodies[bits(12)]},{dates[k]},{names[who]},"
                    f"{emails[who]},{reported[int(rnd() * 1024)]},"
                    f"{helpful[int(rnd() * 1024)]}\n"
                )
            w.flush()
    return w.counts()


def write_answers(out: Path, position: int = 0) -> dict[str, int]:
    plan: Plan = PLAN.get()
    rng = rng_for(plan.seed, "answers")
    rnd, bits = rng.random, rng.getrandbits
    bodies = _answer_bodies(plan.seed, 4096)
    names, emails = _people(plan.seed, "answerers", 4096, seller_share=0.05)
    reported, helpful = _REPORTED, _HELPFUL
    qids, dates, starts, ids = plan.question_ids, plan.question_dates, plan.a_start, plan.answer_ids
    orphans = {pos: n for n, pos in enumerate(plan.orphans)}
    with CsvOut(out / "answers.csv", HEADERS["answers.csv"], len(ids), position) as w:
        add = w.lines.append
        for q in range(len(qids)):
            question, asked = qids[q], dates[q]
            for k in range(starts[q], starts[q + 1]):
                who = bits(12)
                parent = question
                if k in orphans:
                    parent = plan.orphan_question_base + orphans[k]
                add(
                    f"{ids[k]},{parent},{bodies[bits(12)]},"
                    f"{asked + int(rnd() * ANSWER_DELAY_MS)},{names[who]},{emails[who]},"
                    f"{reported[int(rnd() * 1024)]},{helpful[int(rnd() * 1024)]}\n"
                )
            w.flush()
    return w.counts()


def write_photos(out: Path, position: int = 0) -> dict[str, int]:
    plan: Plan = PLAN.get()
    counts, orphan_photos, null_urls = write_photo_rows(
        out / "answers_photos.csv",
        HEADERS["answers_photos.csv"],
        position,
        plan.seed,
        plan.answer_ids,
        PHOTOS_PER_ANSWER,
        0.3,
        set(plan.orphans),
        null_rate=NULL_URL_RATE,
    )
    return {**counts, "orphan_photos": orphan_photos, "null_urls": null_urls}


def _quirks(plan: Plan, counts: dict[str, int]) -> dict[str, Any]:
    """What the loader must reject: answers to questions that do not exist,
    and those answers' photos."""
    return {
        "null_photo_urls": counts["null_urls"],
        "orphan_answer_ids": [plan.answer_ids[k] for k in plan.orphans],
        "expected_rejects": {
            "questions.csv": 0,
            "answers.csv": len(plan.orphans),
            "answers_photos.csv": counts["orphan_photos"],
        },
    }


generate = ExportGenerator(
    "qa",
    __doc__,
    HEADERS,
    make_plan,
    PLAN,
    [write_answers, write_questions, write_photos],
    _quirks,
)
main = generate.main

if __name__ == "__main__":
    main()
