"""The POST /reviews body, validated by msgspec (every rule of the contract's table)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from services.common.validation import BodyId, Email, PhotoUrls, Text

Rating = Annotated[int, msgspec.Meta(ge=1, le=5)]
CharacteristicKey = Annotated[str, msgspec.Meta(pattern=r"^[1-9][0-9]{0,9}$")]


class NewReview(msgspec.Struct, forbid_unknown_fields=False):
    product_id: BodyId
    rating: Rating
    body: Text(50, 1000)
    recommend: bool
    name: Text(1, 60)
    email: Email
    summary: Text(0, 60) = ""
    photos: PhotoUrls = msgspec.field(default_factory=list)
    characteristics: dict[CharacteristicKey, Rating] = msgspec.field(default_factory=dict)
