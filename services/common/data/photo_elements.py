"""Each parent row's stored photos, written by the COPY of the parent rows
(`reviews.photo_elements`, `answers.photo_elements`) rather than by an UPDATE
of every parent with photos after it (decision 0058).

Invariant: for each loaded parent row, the text written is what the
database's trigger stores for it: its loaded photos' `element`s, comma-joined
in photo id order (`string_agg(element, ',' ORDER BY id)`), or NULL when it
has none. An element is `{"id":<id>,"url":<the url as a JSON string, or
null>}` (reviews migrations 004/005, qa 008/011). orjson escapes a string as
Postgres's to_json(text) does (decision 0034); the loaders' tests compare
the two for every row.

The photos file is read twice: here, in the parent file's parser before its
first row, and then for its own COPY once it is known which parents loaded.
Both reads use the same FileParser and FileSpec, so they accept the same
rows; a photo accepted here whose parent is then rejected belongs to no
loaded row, and its reject is reported by the second read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from .csv_parse import FileParser, FileSpec


def photo_element(photo_id: int, url: str | None) -> str:
    """One photo's element, byte for byte as the photos table's generated
    `element` column holds it."""
    return f'{{"id":{photo_id},"url":{orjson.dumps(url).decode()}}}'


def stored_photos(path: Path, spec: FileSpec) -> dict[int, str]:
    """Parent id -> its photos' elements, comma-joined in photo id order,
    from a photos file whose columns are (id, parent id, url)."""
    joined: dict[int, str] = {}

    def collect(row: list[Any]) -> tuple[()]:
        photo_id, parent = row[0], int(row[1])
        element = photo_element(photo_id, row[2])
        before = joined.get(parent)
        if before is None:
            joined[parent] = element
        elif photo_id > _last_id(before):  # the export lists photos in id order
            joined[parent] = before + "," + element
        else:
            joined[parent] = _in_id_order(before + "," + element)
        return ()  # nothing to COPY: this read only collects

    for _ in FileParser(path, spec, collect).chunks():
        pass
    return joined


# Where each element starts. Found only there: inside an element's url, a
# JSON string, every " is escaped (the trigger's check relies on the same).
_START = '{"id":'


def _last_id(elements: str) -> int:
    start = elements.rfind(_START) + len(_START)
    return int(elements[start : elements.index(",", start)])


def _in_id_order(elements: str) -> str:
    parts = elements[len(_START) :].split("," + _START)
    parts.sort(key=lambda part: int(part[: part.index(",")]))
    return ",".join(_START + part for part in parts)
