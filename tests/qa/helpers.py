"""Building Q&A data for the route tests: directly in SQL when a test needs
exact helpfulness, dates or flags, through the API otherwise."""

from __future__ import annotations

import asyncpg

PHOTO = "https://img.example/{}.jpg"


async def add_question(
    conn: asyncpg.Connection,
    product_id: int,
    *,
    body: str = "Is it warm?",
    helpful: int = 0,
    reported: bool = False,
    epoch_ms: int = 1595884714409,
    name: str = "asker",
) -> int:
    return await conn.fetchval(
        "INSERT INTO questions (product_id, body, date_written, asker_name, asker_email,"
        " reported, helpful) VALUES ($1, $2, to_timestamp($3 / 1000.0), $4, 'a@example.com',"
        " $5, $6) RETURNING id",
        product_id,
        body,
        epoch_ms,
        name,
        reported,
        helpful,
    )


async def add_answer(
    conn: asyncpg.Connection,
    question_id: int,
    *,
    body: str = "Very.",
    helpful: int = 0,
    reported: bool = False,
    epoch_ms: int = 1599958385988,
    name: str = "answerer",
    photos: list[str | None] = (),
) -> int:
    answer_id = await conn.fetchval(
        "INSERT INTO answers (question_id, body, date_written, answerer_name, answerer_email,"
        " reported, helpful) VALUES ($1, $2, to_timestamp($3 / 1000.0), $4, 'b@example.com',"
        " $5, $6) RETURNING id",
        question_id,
        body,
        epoch_ms,
        name,
        reported,
        helpful,
    )
    for url in photos:
        await conn.execute(
            "INSERT INTO answers_photos (answer_id, url) VALUES ($1, $2)", answer_id, url
        )
    return answer_id


def question_body(product_id: int, **overrides) -> dict:
    return {
        "body": "Does it run small?",
        "name": "asker",
        "email": "asker@example.com",
        "product_id": product_id,
        **overrides,
    }


def answer_body(**overrides) -> dict:
    return {
        "body": "It runs true to size.",
        "name": "answerer",
        "email": "answerer@example.com",
        "photos": [],
        **overrides,
    }


async def questions(client, product_id: int, query: str = "") -> dict:
    resp = await client.get(f"/qa/questions?product_id={product_id}{query}")
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def answers(client, question_id: int, query: str = "") -> dict:
    resp = await client.get(f"/qa/questions/{question_id}/answers?{query}")
    assert resp.status == 200, await resp.text()
    return await resp.json()
