-- Each review's element of GET /reviews/'s "results", kept ready in its own
-- row (issue 21, decision 0040): a cold page is then the index range it
-- always was, with the stored bytes concatenated in SQL, instead of eleven
-- columns decoded by asyncpg and folded into dicts for orjson.
--
-- Stored generated columns, so every way a row is written (the service's
-- statements, the loader's COPY, a hand-run UPDATE) keeps them current, with
-- no trigger to forget or disable. The bytes must equal what orjson makes of
-- the live query's rows (queries.review_page_from_tables, the reference;
-- tests/reviews/test_review_elements.py compares them after random writes):
-- compact JSON, the live dict's key order, strings through to_json(text),
-- which escapes exactly what orjson escapes (decision 0034).

-- The functions are IMMUTABLE, as a generated column requires: to_json(text)
-- is declared STABLE only because to_json in general calls types' output
-- functions; for text its escaping depends on no setting. They are plpgsql,
-- not sql: a sql function whose body is not immutable is not inlined, and
-- is then planned again by every statement that writes a row (+95 µs a
-- single-row INSERT, measured); plpgsql keeps its plan for the session
-- (+15 µs). Decision 0040.

-- A JSON string literal of `t`.
CREATE FUNCTION review_json_string(t text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN to_json(t)::text;
END
$$;

-- Everything of a review's element up to and including `"helpfulness":`.
-- The vote count and the photos are appended at read time (queries.py): a
-- helpful vote changes a column, not these bytes. The date as the live query
-- formats it; to_char with only numeric fields depends on no locale setting.
CREATE FUNCTION review_element_head(
    id integer, rating smallint, summary text, recommend boolean, response text,
    body text, date timestamptz, reviewer_name text
) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN '{"review_id":' || id::text
    || ',"rating":' || rating::text
    || ',"summary":' || to_json(summary)::text
    || ',"recommend":' || CASE WHEN recommend THEN 'true' ELSE 'false' END
    || ',"response":' || coalesce(to_json(response)::text, 'null')
    || ',"body":' || to_json(body)::text
    || ',"date":"' || to_char(date AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
    || '","reviewer_name":' || to_json(reviewer_name)::text
    || ',"helpfulness":';
END
$$;

-- Rewrites the table once (at full scale minutes, under an exclusive lock:
-- deployments with data migrate before starting the new build, as for 003).
ALTER TABLE reviews ADD COLUMN element_head text GENERATED ALWAYS AS (
    review_element_head(id, rating, summary, recommend, response, body, date, reviewer_name)
) STORED;

-- A photo's element of a review's "photos".
ALTER TABLE reviews_photos ADD COLUMN element text GENERATED ALWAYS AS (
    '{"id":' || id::text || ',"url":' || coalesce(review_json_string(url), 'null') || '}'
) STORED;
