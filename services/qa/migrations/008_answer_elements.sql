-- Each answer's element of GET /qa/questions/:id/answers's "results", kept
-- ready in its own row (issue 21, decision 0040), as the reviews service
-- keeps its reviews' (reviews migration 004): a cold page is the index range
-- it always was, with the stored bytes joined in SQL, instead of seven
-- columns decoded by asyncpg and folded into dicts for orjson.
--
-- Stored generated columns, so every way a row is written (the service's
-- statements, the loader's COPY, the read model's triggers' neighbours, a
-- hand-run UPDATE) keeps them current, with no trigger to forget. The bytes
-- must equal what orjson makes of the live query's rows
-- (queries.answers_page_from_tables, the reference;
-- tests/qa/test_answer_elements.py compares them after random writes).

-- Everything of an answer's element up to and including `"helpfulness":`;
-- the vote count and the photos are appended at read time (queries.py), so
-- a helpful vote changes a column, not these bytes. IMMUTABLE, as a generated
-- column requires: to_json(text) and to_char with only numeric fields depend
-- on no setting (they are declared STABLE for their other argument types).
-- plpgsql, not sql: a sql function whose body is not immutable is not
-- inlined, and is then planned again by every statement that writes a row
-- (+95 µs a single-row INSERT, measured); plpgsql keeps its plan for the
-- session (+15 µs). Decision 0040.
CREATE FUNCTION qa_answer_element_head(
    id integer, body text, date_written timestamptz, answerer_name text
) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN '{"answer_id":' || id::text
    || ',"body":' || to_json(body)::text
    || ',"date":"' || to_char(date_written AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
    || '","answerer_name":' || to_json(answerer_name)::text
    || ',"helpfulness":';
END
$$;

-- A JSON string literal of `t`, or null (see above for IMMUTABLE).
CREATE FUNCTION qa_json_string(t text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN coalesce(to_json(t)::text, 'null');
END
$$;

-- Rewrites each table once (at full scale minutes, under an exclusive lock:
-- deployments with data migrate before starting the new build).
ALTER TABLE answers ADD COLUMN element_head text GENERATED ALWAYS AS (
    qa_answer_element_head(id, body, date_written, answerer_name)
) STORED;

-- A photo's element of an answer's "photos" in the answers list.
ALTER TABLE answers_photos ADD COLUMN element text GENERATED ALWAYS AS (
    '{"id":' || id::text || ',"url":' || qa_json_string(url) || '}'
) STORED;
