"""Checks of a parent row's stored photos (`photo_elements`, kept by a row
trigger on its photos table and written by the loader's COPY), shared by the
reviews (migration 005) and qa (migration 011) tests: the two services keep
them the same way."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg

from tests.lock_waits import wait_until_blocked


async def photos_written_at_once(
    connect: Callable[[str], Awaitable[asyncpg.Connection]],
    dsn: str,
    parent: str,
    parent_id: int,
) -> str:
    """Two transactions add a photo ('a', then 'b') to one row of `parent`
    (reviews or answers) at once: the second's trigger waits for the first's
    row lock (the test waits for that wait itself), then both commit.
    Returns the row's stored photos."""
    photos, key = f"{parent}_photos", f"{parent.removesuffix('s')}_id"
    insert = f"INSERT INTO {photos} ({key}, url) VALUES ($1, $2)"
    first, second, watch = await connect(dsn), await connect(dsn), await connect(dsn)
    one = first.transaction()
    await one.start()
    await first.execute(insert, parent_id, "a")
    other = asyncio.create_task(second.execute(insert, parent_id, "b"))
    await wait_until_blocked(watch, second.get_server_pid())
    await one.commit()
    await other
    return await watch.fetchval(f"SELECT photo_elements FROM {parent} WHERE id = $1", parent_id)


async def recompute_calls(conn: asyncpg.Connection, function: str, sql: str, *args: object) -> int:
    """Runs `sql` in a transaction of its own on `conn`; the calls made in it
    to `function` (the recompute of a row's stored photos)."""
    count = "SELECT coalesce(sum(calls), 0) FROM pg_stat_xact_user_functions WHERE funcname = $1"
    async with conn.transaction():
        await conn.execute("SET LOCAL track_functions = 'pl'")
        before = await conn.fetchval(count, function)
        await conn.execute(sql, *args)
        return await conn.fetchval(count, function) - before


# Photos whose urls need every kind of JSON escaping, a NULL and a quoted
# "null", listed out of id order, with a duplicate id and a parent id that
# is not a number (both rejected): what the loader's stored photos must
# get right byte for byte (services/common/data/photo_elements.py).
AWKWARD_URLS = (
    'https://x/"quoted".jpg',
    "back\\slash and / slash",
    "".join(map(chr, range(1, 32))) + "\x7f",  # every control character
    "é€😀\u2028\ufffd",
    "two\nlines",
    "",
    None,  # a bare null: NULL
    "null",  # a quoted "null": the string
    ',{"id":1,"url":"x"}',  # looks like an element's start
)


def awkward_photos_csv(parent_key: str, parent_id: int, other_parent_id: int) -> str:
    """A photos file (id, parent_key, url): `parent_id` gets the awkward urls
    (ids 20 down to 12), `other_parent_id` one photo (id 1), and two rows are
    rejected (a duplicate id 20, a parent id that is not a number)."""

    def field(url: str | None) -> str:
        return "null" if url is None else '"' + url.replace('"', '""') + '"'

    rows = [f"{20 - i},{parent_id},{field(url)}" for i, url in enumerate(AWKWARD_URLS)]
    rows += [f'20,{parent_id},"https://x/duplicate.jpg"', '21,x,"https://x/bad.jpg"']
    rows.append(f'1,{other_parent_id},"https://x/1.jpg"')
    return f"id,{parent_key},url\n" + "\n".join(rows) + "\n"


async def stored_photos_out_of_step(conn: asyncpg.Connection, parent: str) -> list[int]:
    """Ids of the `parent` rows whose stored photos differ from what the
    trigger would store: their photos' elements, comma-joined in id order."""
    photos, key = f"{parent}_photos", f"{parent.removesuffix('s')}_id"
    rows = await conn.fetch(
        f"SELECT p.id FROM {parent} p LEFT JOIN ("
        f" SELECT {key} AS parent_id, string_agg(element, ',' ORDER BY id) AS elements"
        f" FROM {photos} GROUP BY {key}) ph ON ph.parent_id = p.id"
        " WHERE p.photo_elements IS DISTINCT FROM ph.elements ORDER BY p.id"
    )
    return [r[0] for r in rows]
