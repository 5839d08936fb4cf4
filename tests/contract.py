"""What the route tests of several suites share: the contract's key order for
a review, and the malformed queries a list route answers 400 to."""

from __future__ import annotations

# A review in GET /reviews, keys in the contract's order.
REVIEW_KEYS = [
    "review_id",
    "rating",
    "summary",
    "recommend",
    "response",
    "body",
    "date",
    "reviewer_name",
    "helpfulness",
    "photos",
]

# Values no id query parameter accepts: not a number, not positive, past int4,
# not an integer.
BAD_ID_VALUES = ("abc", "0", "-3", "2147483648", "1.5")


def bad_id_queries(
    path: str, field: str = "product_id", values: tuple[str, ...] = BAD_ID_VALUES
) -> list[tuple[str, str]]:
    """(field, url) cases: `path` without `field`, then with each of `values`."""
    return [(field, path), *((field, f"{path}?{field}={v}") for v in values)]


def bad_paging_queries(
    url: str, pages: tuple[str, ...], counts: tuple[str, ...]
) -> list[tuple[str, str]]:
    """(field, url) cases: `url` with each bad `page`, then each bad `count`."""
    join = "&" if "?" in url else "?"
    return [("page", f"{url}{join}page={v}") for v in pages] + [
        ("count", f"{url}{join}count={v}") for v in counts
    ]


async def assert_400_naming(client, field: str, url: str) -> None:
    """GET `url` is a 400 whose error names `field`."""
    resp = await client.get(url)
    assert resp.status == 400
    assert field in (await resp.json())["error"]
