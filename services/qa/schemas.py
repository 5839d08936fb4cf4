"""The POST bodies, validated by msgspec (every rule of the contract)."""

from __future__ import annotations

import msgspec

from services.common.validation import BodyId, Email, PhotoUrls, Text


class NewQuestion(msgspec.Struct, forbid_unknown_fields=False):
    body: Text(1, 1000)
    name: Text(1, 60)
    email: Email
    product_id: BodyId


class NewAnswer(msgspec.Struct, forbid_unknown_fields=False):
    body: Text(1, 1000)
    name: Text(1, 60)
    email: Email
    photos: PhotoUrls = msgspec.field(default_factory=list)
