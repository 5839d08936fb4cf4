"""The OpenAPI document's shared pieces (gateway/openapi.py builds the
document from them): the JSON Schema helpers, the patterns of the API's
string-typed numbers and dates, and the component schemas (`SCHEMAS`) the
paths refer to. Written once here so that every response and body states a
field the same way."""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

ID_PATTERN = r"^[1-9][0-9]{0,9}$"  # a positive id as a string (the echo fields)
DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"
PRICE_PATTERN = r"^\d+\.\d{2}$"
COUNT_PATTERN = r"^[1-9][0-9]*$"  # counts as strings; zero counts are left out
MEAN_PATTERN = r"^\d+\.\d{16}$"


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: dict[str, Schema], required: list[str] | None = None) -> Schema:
    """A closed object: every listed key present (unless `required` says otherwise), no others."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
    }


def body_obj(properties: dict[str, Schema], required: list[str] | None = None) -> Schema:
    """A request body: the listed keys validated, unknown keys ignored (as the services do)."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
    }


def or_empty(schema: Schema) -> Schema:
    """A query value that may also be sent empty (`?page=`), which means the default."""
    return {"anyOf": [schema, {"type": "string", "enum": [""]}]}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


INT_ID: Schema = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
STR_ID: Schema = {"type": "string", "pattern": ID_PATTERN}
DATE: Schema = {"type": "string", "pattern": DATE_PATTERN}
PRICE: Schema = {"type": "string", "pattern": PRICE_PATTERN}
COUNT_STR: Schema = {"type": "string", "pattern": COUNT_PATTERN}
URL: Schema = {"type": "string", "pattern": r"^https?://"}
HELPFULNESS: Schema = {"type": "integer", "minimum": 0}
PAGE_ECHO: Schema = {"type": "integer", "minimum": 0, "description": "zero-based: page - 1"}
COUNT_ECHO: Schema = {"type": "integer", "minimum": 1, "maximum": 1000}
EMAIL: Schema = {"type": "string", "maxLength": 60, "format": "email"}
NAME: Schema = {"type": "string", "minLength": 1, "maxLength": 60}
PHOTO_URLS: Schema = {"type": "array", "items": URL, "maxItems": 5}

PHOTO_NAME = r"[0-9a-f]{32}(-thumb)?\.(jpg|webp)"  # content-addressed (services/photos)
PHOTO_URL: Schema = {
    "type": "string",
    "pattern": rf"^https?://[^/?#]+/photos/{PHOTO_NAME}$",
    "description": "Under the gateway's public base URL (PUBLIC_BASE_URL); accepted in `photos`.",
}

# A product in the list; its detail adds "features".
PRODUCT_FIELDS: dict[str, Schema] = {
    "id": INT_ID,
    "name": {"type": "string"},
    "slogan": {"type": "string"},
    "description": {"type": "string"},
    "category": {"type": "string"},
    "default_price": PRICE,
}

SCHEMAS: dict[str, Schema] = {
    "Error": obj({"error": {"type": "string", "minLength": 1}}),
    "UploadedPhoto": obj({"url": PHOTO_URL, "thumbnail_url": PHOTO_URL}),
    "Product": obj(PRODUCT_FIELDS),
    "ProductDetail": obj(
        {**PRODUCT_FIELDS, "features": {"type": "array", "items": ref("Feature")}}
    ),
    "Feature": obj({"feature": {"type": "string"}, "value": nullable({"type": "string"})}),
    "StylePhoto": obj({"thumbnail_url": nullable(URL), "url": nullable(URL)}),
    "Sku": obj(
        {
            "quantity": nullable({"type": "integer", "minimum": 0}),
            "size": nullable({"type": "string"}),
        }
    ),
    "Style": obj(
        {
            "style_id": INT_ID,
            "name": {"type": "string"},
            "original_price": PRICE,
            "sale_price": nullable(PRICE),
            "default?": {"type": "boolean"},
            "photos": {
                "type": "array",
                "items": ref("StylePhoto"),
                "minItems": 1,
                "description": "A style without photos answers "
                '[{"thumbnail_url": null, "url": null}].',
            },
            "skus": {
                "type": "object",
                "propertyNames": {"pattern": r"^([1-9][0-9]*|null)$"},
                "additionalProperties": ref("Sku"),
                "minProperties": 1,
                "description": "Keyed by sku id; a style without skus answers "
                '{"null": {"quantity": null, "size": null}}.',
            },
        }
    ),
    "Review": obj(
        {
            "review_id": INT_ID,
            "rating": {"type": "integer", "minimum": 1, "maximum": 5},
            "summary": {"type": "string"},
            "recommend": {"type": "boolean"},
            "response": nullable({"type": "string"}),
            "body": {"type": "string"},
            "date": DATE,
            "reviewer_name": {"type": "string"},
            "helpfulness": HELPFULNESS,
            "photos": {"type": "array", "items": ref("Photo")},
        }
    ),
    "Photo": obj({"id": INT_ID, "url": {"type": "string"}}),
    "ReviewList": obj(
        {
            "product": STR_ID,
            "page": PAGE_ECHO,
            "count": COUNT_ECHO,
            "results": {"type": "array", "items": ref("Review")},
        }
    ),
    "ReviewMeta": obj(
        {
            "product_id": STR_ID,
            "ratings": {
                "type": "object",
                "propertyNames": {"enum": ["1", "2", "3", "4", "5"]},
                "additionalProperties": COUNT_STR,
            },
            "recommended": {
                "type": "object",
                "propertyNames": {"enum": ["false", "true"]},
                "additionalProperties": COUNT_STR,
            },
            "characteristics": {
                "type": "object",
                "additionalProperties": obj(
                    {
                        "id": INT_ID,
                        "value": nullable({"type": "string", "pattern": MEAN_PATTERN}),
                    }
                ),
            },
        }
    ),
    "NewReview": body_obj(
        {
            "product_id": INT_ID,
            "rating": {"type": "integer", "minimum": 1, "maximum": 5},
            "summary": {"type": "string", "maxLength": 60},
            "body": {"type": "string", "minLength": 50, "maxLength": 1000},
            "recommend": {"type": "boolean"},
            "name": NAME,
            "email": EMAIL,
            "photos": PHOTO_URLS,
            "characteristics": {
                "type": "object",
                "propertyNames": {"pattern": ID_PATTERN},
                "additionalProperties": {"type": "integer", "minimum": 1, "maximum": 5},
            },
        },
        required=["product_id", "rating", "body", "recommend", "name", "email"],
    ),
    "QuestionAnswer": obj(
        {
            "id": INT_ID,
            "body": {"type": "string"},
            "date": DATE,
            "answerer_name": {"type": "string"},
            "helpfulness": HELPFULNESS,
            "photos": {"type": "array", "items": {"type": "string"}},
        }
    ),
    "Question": obj(
        {
            "question_id": INT_ID,
            "question_body": {"type": "string"},
            "question_date": DATE,
            "asker_name": {"type": "string"},
            "question_helpfulness": HELPFULNESS,
            "reported": {"type": "boolean", "const": False},
            "answers": {
                "type": "object",
                "propertyNames": {"pattern": ID_PATTERN},
                "additionalProperties": ref("QuestionAnswer"),
                "description": "All non-reported answers keyed by answer id, "
                "helpfulness DESC then id DESC.",
            },
        }
    ),
    "QuestionList": obj(
        {"product_id": STR_ID, "results": {"type": "array", "items": ref("Question")}}
    ),
    "Answer": obj(
        {
            "answer_id": INT_ID,
            "body": {"type": "string"},
            "date": DATE,
            "answerer_name": {"type": "string"},
            "helpfulness": HELPFULNESS,
            "photos": {"type": "array", "items": ref("Photo")},
        }
    ),
    "AnswerList": obj(
        {
            "question": STR_ID,
            "page": PAGE_ECHO,
            "count": COUNT_ECHO,
            "results": {"type": "array", "items": ref("Answer")},
        }
    ),
    "NewQuestion": body_obj(
        {
            "body": {"type": "string", "minLength": 1, "maxLength": 1000},
            "name": NAME,
            "email": EMAIL,
            "product_id": INT_ID,
        }
    ),
    "NewAnswer": body_obj(
        {
            "body": {"type": "string", "minLength": 1, "maxLength": 1000},
            "name": NAME,
            "email": EMAIL,
            "photos": PHOTO_URLS,
        },
        required=["body", "name", "email"],
    ),
    "CartItem": obj({"sku_id": INT_ID, "count": {"type": "integer", "minimum": 1}}),
    "NewCartItem": body_obj({"sku_id": INT_ID}, required=[]),
    "Interaction": body_obj(
        {"element": {"type": "string"}, "widget": {"type": "string"}, "time": {"type": "string"}}
    ),
}
