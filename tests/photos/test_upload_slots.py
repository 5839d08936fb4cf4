"""The bound on uploads in progress (services/photos/resources.py)."""

from __future__ import annotations

from services.photos.resources import UploadSlots


def test_upload_slots_refuse_past_their_limit() -> None:
    slots = UploadSlots(1)
    with slots.take() as first:
        with slots.take() as second:
            assert first and not second
    with slots.take() as again:
        assert again and slots.used == 1
    assert slots.used == 0
