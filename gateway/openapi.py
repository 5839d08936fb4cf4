"""The OpenAPI 3.1 document of the public API, built from Python so that the
shared pieces (error bodies, id parameters, paging; the component schemas in
gateway/openapi_schemas.py) are written once.
gateway/openapi.json is generated from it and checked in (nginx serves that
file); tests/gateway/test_openapi.py fails when the two differ.

    python -m gateway.openapi          # rewrite gateway/openapi.json

Each path item names the service that answers it in `x-runway-service`, so the
tests know which routes they can exercise with the services present.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from gateway.openapi_schemas import (
    INT_ID,
    PHOTO_NAME,
    SCHEMAS,
    STR_ID,
    Schema,
    body_obj,
    obj,
    or_empty,
    ref,
)

OPENAPI_JSON = Path(__file__).resolve().parent / "openapi.json"


# --- parameters and responses ------------------------------------------------


def path_id(name: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": "A positive integer up to 2^31-1; anything else is a 400.",
        "schema": STR_ID,
    }


def query_product_id() -> Schema:
    return {"name": "product_id", "in": "query", "required": True, "schema": STR_ID}


PAGING: list[Schema] = [
    {
        "name": "page",
        "in": "query",
        "description": "1-based page number.",
        "schema": or_empty({"type": "integer", "minimum": 1, "default": 1}),
    },
    {
        "name": "count",
        "in": "query",
        "description": "Page size; above 1000 is a 400.",
        "schema": or_empty({"type": "integer", "minimum": 1, "maximum": 1000, "default": 5}),
    },
]

SESSION: list[Schema] = [
    {"name": "session_id", "in": "cookie", "required": False, "schema": {"type": "string"}},
    {"name": "X-Session-Id", "in": "header", "required": False, "schema": {"type": "string"}},
]

REQUEST_ID_HEADER: Schema = {
    "description": "The caller's X-Request-Id when it sent one, otherwise a new one.",
    "schema": {"type": "string"},
}

ERROR_DESCRIPTIONS: dict[str, str] = {
    "400": "A malformed query, path or session value, or a body that is not JSON "
    "(the message names the field).",
    "404": "Unknown id, or no public route for the path.",
    "413": "Request body over 1 MiB (10 MiB for POST /photos).",
    "415": "Not a JPEG, PNG or WebP image by its bytes (whatever Content-Type or file name "
    "it came with), or a Content-Type the route does not take.",
    "422": "The body fails validation (the message names the field); for a photo: over "
    "40 megapixels or an aspect ratio over 20:1.",
    "429": "Rate limit exceeded; retry after Retry-After seconds.",
    "502": "No instance of the service answered.",
    "503": "A dependency (the database) is down.",
    "504": "The service did not answer in time.",
}
# Errors any proxied request may meet at the gateway.
GATEWAY_ERRORS = ("413", "429", "502", "503", "504")


def error_response(status: str) -> Schema:
    headers: dict[str, Schema] = {"X-Request-Id": {"$ref": "#/components/headers/XRequestId"}}
    if status == "429":
        headers["Retry-After"] = {
            "description": "Seconds to wait.",
            "schema": {"type": "string", "pattern": r"^\d+$"},
        }
    return {
        "description": ERROR_DESCRIPTIONS[status],
        "headers": headers,
        "content": {"application/json": {"schema": ref("Error")}},
    }


def ok(schema: Schema, description: str = "OK") -> Schema:
    return {
        "description": description,
        "headers": {"X-Request-Id": {"$ref": "#/components/headers/XRequestId"}},
        "content": {"application/json": {"schema": schema}},
    }


CREATED: Schema = {
    "description": "Created. The body is empty or the text `Created`.",
    "headers": {"X-Request-Id": {"$ref": "#/components/headers/XRequestId"}},
    "content": {"text/plain": {"schema": {"type": "string", "enum": ["", "Created"]}}},
}
NO_CONTENT: Schema = {
    "description": "Done; no body.",
    "headers": {"X-Request-Id": {"$ref": "#/components/headers/XRequestId"}},
}


def responses(success: dict[str, Schema], *errors: str) -> dict[str, Schema]:
    out = dict(success)
    for status in sorted({*errors, *GATEWAY_ERRORS}):
        out[status] = {"$ref": f"#/components/responses/E{status}"}
    return out


def json_body(schema: Schema) -> Schema:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def op(op_id: str, summary: str, tag: str, resp: dict[str, Schema], **extra: Any) -> dict[str, Any]:
    return {"operationId": op_id, "summary": summary, "tags": [tag], **extra, "responses": resp}


def put_action(op_id: str, summary: str, tag: str, param: str) -> dict[str, Any]:
    return {
        "x-runway-service": tag_service(tag),
        "put": op(
            op_id,
            summary,
            tag,
            responses({"204": NO_CONTENT}, "400", "404"),
            parameters=[path_id(param)],
        ),
    }


def tag_service(tag: str) -> str:
    return {
        "products": "overview",
        "cart": "overview",
        "interactions": "overview",
        "reviews": "reviews",
        "qa": "qa",
        "photos": "photos",
    }[tag]


IMAGE: Schema = {"type": "string", "contentMediaType": "image/*"}
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp")


def photo_paths() -> dict[str, Any]:
    """The project's addition to the contract (docs/photos.md)."""
    immutable = {"schema": {"type": "string", "enum": ["public, max-age=31536000, immutable"]}}
    stored = {
        "description": "The stored image (re-encoded, no metadata). HEAD answers the same headers.",
        "headers": {
            "Cache-Control": immutable,
            "ETag": {"schema": {"type": "string"}},
            "X-Content-Type-Options": {"schema": {"type": "string", "enum": ["nosniff"]}},
        },
        "content": {t: {"schema": IMAGE} for t in ("image/jpeg", "image/webp")},
    }
    upload = {t: {"schema": IMAGE} for t in IMAGE_TYPES}
    upload["multipart/form-data"] = {"schema": body_obj({"photo": IMAGE})}
    return {
        "/photos": {
            "x-runway-service": "photos",
            "post": op(
                "uploadPhoto",
                "Store a picture for a review or an answer (at most 20 a minute per client)",
                "photos",
                responses({"201": ok(ref("UploadedPhoto"), "Stored")}, "400", "415", "422"),
                requestBody={"required": True, "content": upload},
            ),
        },
        "/photos/{name}": {
            "x-runway-service": "photos",
            "get": op(
                "getPhoto",
                "A stored picture or its thumbnail",
                "photos",
                responses({"200": stored, "304": {"description": "Not modified (ETag)."}}, "404"),
                parameters=[
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": f"^{PHOTO_NAME}$"},
                    }
                ],
            ),
        },
    }


def paths() -> dict[str, Any]:
    return photo_paths() | {
        "/products": {
            "x-runway-service": "overview",
            "get": op(
                "listProducts",
                "Products ordered by id",
                "products",
                responses({"200": ok({"type": "array", "items": ref("Product")})}, "400"),
                parameters=PAGING,
            ),
        },
        "/products/{product_id}": {
            "x-runway-service": "overview",
            "get": op(
                "getProduct",
                "One product with its features",
                "products",
                responses(
                    {"200": ok(ref("ProductDetail"))},
                    "400",
                    "404",
                ),
                parameters=[path_id("product_id")],
            ),
        },
        "/products/{product_id}/styles": {
            "x-runway-service": "overview",
            "get": op(
                "getStyles",
                "The product's styles",
                "products",
                responses(
                    {
                        "200": ok(
                            obj(
                                {
                                    "product_id": STR_ID,
                                    "results": {"type": "array", "items": ref("Style")},
                                }
                            )
                        )
                    },
                    "400",
                    "404",
                ),
                parameters=[path_id("product_id")],
            ),
        },
        "/products/{product_id}/related": {
            "x-runway-service": "overview",
            "get": op(
                "getRelated",
                "Related product ids, in the export's row order",
                "products",
                responses({"200": ok({"type": "array", "items": INT_ID})}, "400", "404"),
                parameters=[path_id("product_id")],
            ),
        },
        "/reviews": {
            "x-runway-service": "reviews",
            "description": "`/reviews/` (trailing slash) is the same resource.",
            "get": op(
                "listReviews",
                "A page of a product's reviews",
                "reviews",
                responses({"200": ok(ref("ReviewList"))}, "400"),
                parameters=[
                    query_product_id(),
                    *PAGING,
                    {
                        "name": "sort",
                        "in": "query",
                        "description": "Empty means the default.",
                        "schema": {
                            "type": "string",
                            "enum": ["newest", "helpful", "relevant", ""],
                            "default": "relevant",
                        },
                    },
                ],
            ),
            "post": op(
                "addReview",
                "Add a review",
                "reviews",
                responses({"201": CREATED}, "400", "404", "422"),
                requestBody=json_body(ref("NewReview")),
            ),
        },
        "/reviews/meta": {
            "x-runway-service": "reviews",
            "get": op(
                "reviewMeta",
                "Rating, recommendation and characteristic aggregates",
                "reviews",
                responses({"200": ok(ref("ReviewMeta"))}, "400"),
                parameters=[query_product_id()],
            ),
        },
        "/reviews/{review_id}/helpful": put_action(
            "markReviewHelpful", "Add one to a review's helpfulness", "reviews", "review_id"
        ),
        "/reviews/{review_id}/report": put_action(
            "reportReview", "Hide a review from every list and from meta", "reviews", "review_id"
        ),
        "/qa/questions": {
            "x-runway-service": "qa",
            "get": op(
                "listQuestions",
                "A page of a product's questions with all their answers",
                "qa",
                responses({"200": ok(ref("QuestionList"))}, "400"),
                parameters=[query_product_id(), *PAGING],
            ),
            "post": op(
                "addQuestion",
                "Ask a question",
                "qa",
                responses({"201": CREATED}, "400", "422"),
                requestBody=json_body(ref("NewQuestion")),
            ),
        },
        "/qa/questions/{question_id}/answers": {
            "x-runway-service": "qa",
            "get": op(
                "listAnswers",
                "A page of a question's answers",
                "qa",
                responses({"200": ok(ref("AnswerList"))}, "400", "404"),
                parameters=[path_id("question_id"), *PAGING],
            ),
            "post": op(
                "addAnswer",
                "Answer a question",
                "qa",
                responses({"201": CREATED}, "400", "404", "422"),
                parameters=[path_id("question_id")],
                requestBody=json_body(ref("NewAnswer")),
            ),
        },
        "/qa/questions/{question_id}/helpful": put_action(
            "markQuestionHelpful", "Add one to a question's helpfulness", "qa", "question_id"
        ),
        "/qa/questions/{question_id}/report": put_action(
            "reportQuestion", "Hide a question", "qa", "question_id"
        ),
        "/qa/answers/{answer_id}/helpful": put_action(
            "markAnswerHelpful", "Add one to an answer's helpfulness", "qa", "answer_id"
        ),
        "/qa/answers/{answer_id}/report": put_action(
            "reportAnswer", "Hide an answer", "qa", "answer_id"
        ),
        "/cart": {
            "x-runway-service": "overview",
            "get": op(
                "getCart",
                "The session's cart",
                "cart",
                responses({"200": ok({"type": "array", "items": ref("CartItem")})}, "400"),
                parameters=SESSION,
            ),
            "post": op(
                "addToCart",
                "Add one of a sku to the session's cart",
                "cart",
                responses({"201": CREATED}, "400", "404", "422"),
                parameters=[
                    *SESSION,
                    {
                        "name": "sku_id",
                        "in": "query",
                        "required": False,
                        "description": "Accepted instead of the body's sku_id (empty: absent).",
                        "schema": or_empty(STR_ID),
                    },
                ],
                requestBody={
                    "required": False,
                    "content": {"application/json": {"schema": ref("NewCartItem")}},
                },
            ),
        },
        "/interactions": {
            "x-runway-service": "overview",
            "post": op(
                "logInteraction",
                "Record a click-tracking event",
                "interactions",
                responses({"201": CREATED}, "400", "422"),
                requestBody=json_body(ref("Interaction")),
            ),
        },
    }


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Atelier storefront API",
            "version": "1.0.0",
            "description": (
                "The public API served by the Runway gateway, as written in the contract "
                "(shared/api/CONTRACT.md). Keys appear in the order the schemas list them. "
                "Every response carries X-Request-Id; every error body is "
                '`{"error": "..."}`. The services\' /metrics, /healthz and /readyz are not '
                "part of the public surface."
            ),
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "servers": [{"url": "http://127.0.0.1:8080", "description": "local stack gateway"}],
        "tags": [
            {"name": t} for t in ("products", "reviews", "qa", "cart", "interactions", "photos")
        ],
        "paths": paths(),
        "components": {
            "schemas": SCHEMAS,
            "responses": {f"E{s}": error_response(s) for s in ERROR_DESCRIPTIONS},
            "headers": {"XRequestId": REQUEST_ID_HEADER},
        },
    }


def dumps() -> str:
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    OPENAPI_JSON.write_text(dumps())
    print(OPENAPI_JSON, file=sys.stderr)


if __name__ == "__main__":
    main()
