"""Request bodies of the overview service, validated by msgspec."""

from __future__ import annotations

from typing import Annotated

import msgspec

from services.common.app import MAX_BODY_BYTES
from services.common.validation import BodyId, Text

# The contract bounds only the type (string); the body limit (1 MiB) bounds
# the length. Text() also refuses NUL, which Postgres text cannot store.
EventText = Text(0, MAX_BODY_BYTES)
# The front end sometimes sends the id as a string: accept "12" as 12.
SkuIdText = Annotated[str, msgspec.Meta(pattern=r"^[1-9][0-9]{0,9}$")]


class CartAdd(msgspec.Struct, forbid_unknown_fields=False):
    # Absent: the sku_id may be in the query string instead.
    sku_id: BodyId | SkuIdText | None = None


class Interaction(msgspec.Struct, forbid_unknown_fields=False):
    element: EventText
    widget: EventText
    time: EventText
