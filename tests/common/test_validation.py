"""Unit tests of the pure parsing and validation helpers."""

from __future__ import annotations

import msgspec
import pytest

from services.common.errors import ApiError
from services.common.settings import Settings, instance_ports
from services.common.validation import (
    MAX_ID,
    Email,
    PhotoUrls,
    Text,
    _field_message,
    parse_id,
    parse_paging,
)


@pytest.mark.parametrize("raw", ["1", "42", str(MAX_ID), "007"])
def test_parse_id_accepts_positive_ints(raw):
    assert parse_id(raw, "product_id") == int(raw)


@pytest.mark.parametrize(
    "raw", [None, "", "0", "-1", "1.0", "abc", "1e3", " 1", str(MAX_ID + 1), "99999999999", "１２"]
)
def test_parse_id_rejects_everything_else_naming_the_field(raw):
    with pytest.raises(ApiError) as err:
        parse_id(raw, "question_id")
    assert err.value.status == 400 and "question_id" in err.value.message


def test_paging_defaults_and_bounds():
    assert parse_paging({}) == (1, 5)
    assert parse_paging({"page": "3", "count": "1000"}) == (3, 1000)
    for bad in ({"page": "0"}, {"count": "1001"}, {"count": "-5"}, {"page": "x"}):
        with pytest.raises(ApiError) as err:
            parse_paging(bad)
        assert err.value.status == 400 and next(iter(bad)) in err.value.message


class Body(msgspec.Struct):
    name: Text(1, 5)
    email: Email
    photos: PhotoUrls = msgspec.field(default_factory=list)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"name": "", "email": "a@b.co"}', "name"),
        (b'{"name": "abcdef", "email": "a@b.co"}', "name"),
        (b'{"name": "\\u0000", "email": "a@b.co"}', "name"),
        (b'{"name": "ab", "email": "a@b"}', "email"),
        (b'{"name": "ab", "email": "a b@c.co"}', "email"),
        (b'{"name": "ab", "email": "a@@c.co"}', "email"),
        (b'{"name": "ab", "email": "a@b.co", "photos": ["javascript:alert(1)"]}', "photos"),
        (b'{"name": "ab", "email": "a@b.co", "photos": ["https://"]}', "photos"),
    ],
)
def test_body_types_reject_with_the_field_named(raw, field):
    with pytest.raises(msgspec.ValidationError) as err:
        msgspec.json.decode(raw, type=Body)
    assert _field_message(err.value).startswith(field)


def test_name_length_counts_characters_not_bytes():
    body = msgspec.json.decode('{"name": "ééééé", "email": "a@b.co"}'.encode(), type=Body)
    assert body.name == "ééééé"


def test_instance_ports_follow_the_settings():
    env = {"REVIEWS_INSTANCES": "3", "REVIEWS_PORT": "9002"}
    assert instance_ports("reviews", env) == [9002, 9102, 9202]
    assert instance_ports("qa", {}) == [8003]
    assert Settings.from_env("qa", {"PORT": "9999"}).port == 9999
    assert Settings.from_env("overview", {}).database_url.endswith("/atelier_overview")
