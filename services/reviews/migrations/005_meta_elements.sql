-- GET /reviews/meta's parts kept ready in the rows they come from (issue 21,
-- decision 0040), as 004 keeps each review's element: the counts in the
-- product's product_ratings row, each characteristic's member of
-- "characteristics" in its row. A cold meta is then the same two index
-- probes, with the stored bytes joined in SQL, instead of ten columns per
-- characteristic decoded by asyncpg and folded into dicts for orjson.
--
-- Stored generated columns: every write that changes a count or a score
-- (the service's statements, the loader's bulk inserts) recomputes them in
-- the same row write. The bytes must equal what orjson makes of the live
-- query's rows (queries.review_meta_from_tables, the reference;
-- tests/reviews/test_review_elements.py compares them after random writes).
-- IMMUTABLE as a generated column requires: concat_ws, to_json(text) and
-- numeric's text depend on no setting (decision 0034 on the escaping).

-- `"ratings":{…},"recommended":{…}`: the counts that are not 0, as strings.
CREATE FUNCTION review_meta_counts(
    r1 integer, r2 integer, r3 integer, r4 integer, r5 integer,
    recommend_false integer, recommend_true integer
) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT '"ratings":{' || concat_ws(',',
        CASE WHEN r1 <> 0 THEN '"1":"' || r1::text || '"' END,
        CASE WHEN r2 <> 0 THEN '"2":"' || r2::text || '"' END,
        CASE WHEN r3 <> 0 THEN '"3":"' || r3::text || '"' END,
        CASE WHEN r4 <> 0 THEN '"4":"' || r4::text || '"' END,
        CASE WHEN r5 <> 0 THEN '"5":"' || r5::text || '"' END)
    || '},"recommended":{' || concat_ws(',',
        CASE WHEN recommend_false <> 0 THEN '"false":"' || recommend_false::text || '"' END,
        CASE WHEN recommend_true <> 0 THEN '"true":"' || recommend_true::text || '"' END)
    || '}'
$$;

-- `"name":{"id":…,"value":"…"}`: the mean score to 16 places as a string,
-- null before any score.
CREATE FUNCTION review_characteristic_member(
    id integer, name text, score_sum bigint, score_count integer
) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT to_json(name)::text || ':{"id":' || id::text || ',"value":'
    || CASE WHEN score_count > 0
            THEN '"' || round(score_sum::numeric / score_count, 16)::text || '"'
            ELSE 'null' END
    || '}'
$$;

ALTER TABLE product_ratings ADD COLUMN element text GENERATED ALWAYS AS (
    review_meta_counts(r1, r2, r3, r4, r5, recommend_false, recommend_true)
) STORED;

ALTER TABLE characteristics ADD COLUMN element text GENERATED ALWAYS AS (
    review_characteristic_member(id, name, score_sum, score_count)
) STORED;
