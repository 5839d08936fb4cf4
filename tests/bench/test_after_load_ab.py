"""bench.after_load_ab's one pure part: the sides alternate their order."""

from __future__ import annotations

from bench.after_load_ab import alternated


def test_sides_alternate_their_order_round_by_round() -> None:
    assert alternated(3) == [
        (0, "as-loaded"),
        (0, "vacuumed"),
        (1, "vacuumed"),
        (1, "as-loaded"),
        (2, "as-loaded"),
        (2, "vacuumed"),
    ]


def test_two_templates_alternate_the_same_way() -> None:
    assert alternated(2, ("old_qa", "new_qa")) == [
        (0, "old_qa"),
        (0, "new_qa"),
        (1, "new_qa"),
        (1, "old_qa"),
    ]
