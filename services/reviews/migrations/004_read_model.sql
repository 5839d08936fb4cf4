-- The read model of the two cold reads (issue 21): each product's review
-- lists and its meta as the bytes GET /reviews/ and GET /reviews/meta send,
-- kept up to date inside the transaction of every write by the triggers
-- below, so that a cold read is one primary-key read (queries.py).
--
-- The bytes are built here, in SQL, and must equal what orjson makes of the
-- live queries' rows (queries.py review_page_from_tables /
-- review_meta_from_tables; tests/reviews/test_read_model.py compares them):
-- compact JSON, keys in the live dicts' order, strings through to_json(text),
-- which escapes exactly what orjson escapes (decision 0034).

-- One row per (product, order) with at least one non-reported review.
-- `items`: the JSON elements of the results array, comma-joined, in that
-- order; `ends[k]`: the byte offset where element k (1-based) ends, so a page
-- is one substring. `relevant` shares `helpful`'s order and row. Only the
-- first 100 elements of each order are kept (`complete`: all of them are):
-- a write rebuilds its product's lists, so their size bounds what a write
-- costs (decision 0035); a page past them is read from the live query.
CREATE TABLE review_lists (
    product_id  integer NOT NULL,
    sort_key    text    NOT NULL CHECK (sort_key IN ('newest', 'helpful')),
    items       bytea   NOT NULL,
    ends        integer[] NOT NULL,
    complete    boolean NOT NULL,
    PRIMARY KEY (product_id, sort_key)
);
-- lz4 where the server has it: at SCALE 0.1 the whole build took 15 s with
-- lz4, 23 s with pglz, 20 s uncompressed (STORAGE EXTERNAL, twice the size);
-- decision 0035.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_settings
               WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)) THEN
        ALTER TABLE review_lists ALTER COLUMN items SET COMPRESSION lz4;
    END IF;
END
$$;

-- One row per product with a product_ratings row or a characteristic: the
-- whole meta body. A product without one answers the empty meta.
CREATE TABLE review_meta_docs (
    product_id  integer PRIMARY KEY,
    body        bytea   NOT NULL
);

-- One review as its JSON element of `results` (the order of the live dict's
-- keys); `photos`: its photos' elements, comma-joined, or NULL.
CREATE FUNCTION read_model_review_element(r reviews, photos text) RETURNS bytea
LANGUAGE sql STABLE AS $$
SELECT convert_to(
    '{"review_id":' || r.id::text
    || ',"rating":' || r.rating::text
    || ',"summary":' || to_json(r.summary)::text
    || ',"recommend":' || CASE WHEN r.recommend THEN 'true' ELSE 'false' END
    || ',"response":' || coalesce(to_json(r.response)::text, 'null')
    || ',"body":' || to_json(r.body)::text
    || ',"date":"'
    || to_char(r.date AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
    || '","reviewer_name":' || to_json(r.reviewer_name)::text
    || ',"helpfulness":' || r.helpfulness::text
    || ',"photos":[' || coalesce(photos, '') || ']}',
    'UTF8')
$$;

-- The list rows of `pids`, from the tables: each order's first 100
-- non-reported reviews (the partial indexes), their photos by index, then
-- each order's elements and running end offsets.
CREATE FUNCTION read_model_list_rows(pids integer[]) RETURNS SETOF review_lists
LANGUAGE sql STABLE AS $$
WITH products AS (
    SELECT k.product_id,
           (SELECT count(*) FROM (
                SELECT 1 FROM reviews c WHERE c.product_id = k.product_id AND NOT c.reported
                LIMIT 101) c) <= 100 AS complete
    FROM (SELECT DISTINCT unnest(pids) AS product_id) k
), picked AS (
    SELECT p.product_id, t.id
    FROM products p
    CROSS JOIN LATERAL (
        (SELECT r.id FROM reviews r WHERE r.product_id = p.product_id AND NOT r.reported
         ORDER BY r.date DESC, r.id DESC LIMIT 100)
        UNION
        (SELECT r.id FROM reviews r WHERE r.product_id = p.product_id AND NOT r.reported
         ORDER BY r.helpfulness DESC, r.date DESC, r.id DESC LIMIT 100)
    ) t
), elements AS MATERIALIZED (
    SELECT r.product_id, r.id, r.helpfulness, r.date,
           read_model_review_element(r, ph.photos) AS element
    FROM picked JOIN reviews r ON r.id = picked.id
    LEFT JOIN LATERAL (
        SELECT string_agg('{"id":' || x.id::text || ',"url":'
                          || coalesce(to_json(x.url)::text, 'null') || '}', ',' ORDER BY x.id)
               AS photos
        FROM reviews_photos x WHERE x.review_id = r.id
    ) ph ON true
), newest AS (
    -- Numbered among the union of both orders' first 100: the first 100 here
    -- are this order's first 100.
    SELECT product_id, element,
           (sum(octet_length(element) + 1) OVER w - 1)::integer AS ends,
           row_number() OVER w AS n
    FROM elements
    WINDOW w AS (PARTITION BY product_id ORDER BY date DESC, id DESC)
), helpful AS (
    SELECT product_id, element,
           (sum(octet_length(element) + 1) OVER w - 1)::integer AS ends,
           row_number() OVER w AS n
    FROM elements
    WINDOW w AS (PARTITION BY product_id ORDER BY helpfulness DESC, date DESC, id DESC)
)
SELECT e.product_id, 'newest', string_agg(e.element, '\x2c'::bytea ORDER BY e.n),
       array_agg(e.ends ORDER BY e.n), bool_and(p.complete)
FROM newest e JOIN products p USING (product_id) WHERE e.n <= 100 GROUP BY e.product_id
UNION ALL
SELECT e.product_id, 'helpful', string_agg(e.element, '\x2c'::bytea ORDER BY e.n),
       array_agg(e.ends ORDER BY e.n), bool_and(p.complete)
FROM helpful e JOIN products p USING (product_id) WHERE e.n <= 100 GROUP BY e.product_id
$$;

-- The meta rows of `pids`: keys as the live query folds them (ratings and
-- recommend counts that are not 0, characteristics by id, a name's first,
-- lowest-id one only); none for a product with nothing to say.
CREATE FUNCTION read_model_meta_rows(pids integer[]) RETURNS SETOF review_meta_docs
LANGUAGE sql STABLE AS $$
SELECT k.product_id, convert_to(
    '{"product_id":"' || k.product_id::text
    || '","ratings":{' || concat_ws(',',
        CASE WHEN pr.r1 <> 0 THEN '"1":"' || pr.r1::text || '"' END,
        CASE WHEN pr.r2 <> 0 THEN '"2":"' || pr.r2::text || '"' END,
        CASE WHEN pr.r3 <> 0 THEN '"3":"' || pr.r3::text || '"' END,
        CASE WHEN pr.r4 <> 0 THEN '"4":"' || pr.r4::text || '"' END,
        CASE WHEN pr.r5 <> 0 THEN '"5":"' || pr.r5::text || '"' END)
    || '},"recommended":{' || concat_ws(',',
        CASE WHEN pr.recommend_false <> 0 THEN '"false":"' || pr.recommend_false::text || '"' END,
        CASE WHEN pr.recommend_true <> 0 THEN '"true":"' || pr.recommend_true::text || '"' END)
    || '},"characteristics":{' || coalesce(c.items, '') || '}}',
    'UTF8')
FROM (SELECT DISTINCT unnest(pids) AS product_id) k
LEFT JOIN product_ratings pr ON pr.product_id = k.product_id
LEFT JOIN LATERAL (
    SELECT string_agg(to_json(f.name)::text || ':{"id":' || f.id::text || ',"value":'
                      || coalesce(to_json(f.value)::text, 'null') || '}', ',' ORDER BY f.id)
           AS items
    FROM (
        SELECT DISTINCT ON (ch.name) ch.id, ch.name,
               CASE WHEN ch.score_count > 0
                    THEN round(ch.score_sum::numeric / ch.score_count, 16)::text END AS value
        FROM characteristics ch WHERE ch.product_id = k.product_id
        ORDER BY ch.name, ch.id
    ) f
) c ON true
WHERE pr.product_id IS NOT NULL OR c.items IS NOT NULL
$$;

-- Two writers of one product must not build its documents from snapshots
-- that miss each other's change: in READ COMMITTED the second's upsert would
-- wait for the first's row, then overwrite it with bytes built without the
-- first's write. So a refresh first takes a transaction-level lock per
-- product (in id order: two statements touching several products do not
-- deadlock; lists and meta share the key, so the triggers of one statement,
-- in whatever order they fire, take one lock per product), and reads the
-- tables in its next statement, whose fresh snapshot sees every write
-- committed before the lock was granted. Writes to different products do
-- not wait for each other.
CREATE FUNCTION read_model_lock(pids integer[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    p integer;
BEGIN
    FOR p IN SELECT DISTINCT x FROM unnest(pids) x WHERE x IS NOT NULL ORDER BY x LOOP
        PERFORM pg_advisory_xact_lock(29302, p);  -- 29302 = 0x7276, 'rv'
    END LOOP;
END
$$;

-- What the triggers call: rebuild the documents of `pids` in place, and
-- drop those left with nothing. plpgsql, so that each session plans these
-- statements once (a SQL function's are planned again at every call), and
-- a generic plan forced: left to choose, plpgsql kept planning each call
-- anew (custom plans, ~0.7 ms of the ~1.1 ms a list refresh took; with the
-- generic plan, ~0.2 ms; decision 0035).
--
-- written_by: the command id of the rows that call for the rebuild (NULL:
-- unknown). A product whose document this transaction already rebuilt at a
-- later command is left alone: that rebuild's snapshot saw every earlier
-- command, and the lock has kept other writers out since. So INSERT_REVIEW,
-- which writes a review and its photos (and both aggregates) in one
-- statement, rebuilds the list once and the meta once, not twice: the first
-- trigger to run builds, the second skips. A row written in a subtransaction
-- has another xmin and is rebuilt again (correct, just not skipped).
-- `= ANY(pids)`, not `IN (SELECT unnest(pids))`: with the generic plan the
-- latter hash-joined a sequential scan of the whole table (~70 ms a write on
-- SCALE 0.1 right after a load, before any ANALYZE of the read model), the
-- former is a primary-key probe per product whatever the statistics.
CREATE FUNCTION read_model_refresh_lists(pids integer[], written_by bigint) RETURNS void
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    PERFORM read_model_lock(pids);
    IF written_by IS NOT NULL THEN
        SELECT array_agg(x) INTO pids FROM unnest(pids) x
        WHERE NOT EXISTS (
            SELECT 1 FROM review_lists l
            WHERE l.product_id = x AND l.xmin = pg_current_xact_id()::xid
              AND l.cmin::text::bigint > written_by);
        IF pids IS NULL THEN
            RETURN;
        END IF;
    END IF;
    INSERT INTO review_lists AS l SELECT * FROM read_model_list_rows(pids)
    ON CONFLICT (product_id, sort_key) DO UPDATE
    SET items = EXCLUDED.items, ends = EXCLUDED.ends, complete = EXCLUDED.complete;
    DELETE FROM review_lists l
    WHERE l.product_id = ANY(pids)
      AND NOT EXISTS (SELECT 1 FROM reviews r WHERE r.product_id = l.product_id AND NOT r.reported);
END
$$;

CREATE FUNCTION read_model_refresh_meta(pids integer[], written_by bigint) RETURNS void
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    PERFORM read_model_lock(pids);
    IF written_by IS NOT NULL THEN
        SELECT array_agg(x) INTO pids FROM unnest(pids) x
        WHERE NOT EXISTS (
            SELECT 1 FROM review_meta_docs d
            WHERE d.product_id = x AND d.xmin = pg_current_xact_id()::xid
              AND d.cmin::text::bigint > written_by);
        IF pids IS NULL THEN
            RETURN;
        END IF;
    END IF;
    INSERT INTO review_meta_docs AS d SELECT * FROM read_model_meta_rows(pids)
    ON CONFLICT (product_id) DO UPDATE SET body = EXCLUDED.body;
    DELETE FROM review_meta_docs d
    WHERE d.product_id = ANY(pids)
      AND NOT EXISTS (SELECT 1 FROM product_ratings pr WHERE pr.product_id = d.product_id)
      AND NOT EXISTS (SELECT 1 FROM characteristics ch WHERE ch.product_id = d.product_id);
END
$$;

-- Every product's documents at once, into the empty tables (the loader after
-- its COPY, this migration for rows already there): plain INSERTs, no
-- upsert and no DELETE (planned while the table is empty, refresh's DELETE
-- would scan it once per product).
CREATE FUNCTION read_model_build_all() RETURNS void
LANGUAGE sql VOLATILE AS $$
INSERT INTO review_lists
SELECT * FROM read_model_list_rows(
    ARRAY(SELECT DISTINCT product_id FROM reviews WHERE NOT reported));
INSERT INTO review_meta_docs
SELECT * FROM read_model_meta_rows(
    ARRAY(SELECT product_id FROM product_ratings UNION SELECT product_id FROM characteristics));
$$;

-- The triggers: statement-level, AFTER, with transition tables, so they fire
-- once per statement, after every CTE of the one-statement writes
-- (INSERT_REVIEW's review, photos, scores and aggregates are all in the
-- tables by then), and rebuild each touched product once per statement.
-- They run as the writing role (SECURITY INVOKER): the app role has DML on
-- every table of the schema (services/common/migrate.py), the read model's
-- included, and EXECUTE on functions is PUBLIC's by default. An inserted or
-- updated row's current version carries the statement's command id (cmin:
-- every row it wrote shares it), passed on as written_by.

-- reviews and reviews_photos -> the product's lists.
CREATE FUNCTION read_model_reviews_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    pids integer[];
    written_by bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(DISTINCT product_id) INTO pids FROM new_rows WHERE NOT reported;
    ELSIF TG_OP = 'UPDATE' THEN
        SELECT array_agg(DISTINCT product_id) INTO pids
        FROM (SELECT product_id FROM old_rows UNION SELECT product_id FROM new_rows) t;
    ELSE
        SELECT array_agg(DISTINCT product_id) INTO pids FROM old_rows WHERE NOT reported;
    END IF;
    IF pids IS NULL THEN
        RETURN NULL;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        SELECT r.cmin::text::bigint INTO written_by
        FROM reviews r WHERE r.id = (SELECT id FROM new_rows LIMIT 1);
    END IF;
    PERFORM read_model_refresh_lists(pids, written_by);
    RETURN NULL;
END
$$;

CREATE FUNCTION read_model_photos_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    pids integer[];
    written_by bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(DISTINCT r.product_id) INTO pids
        FROM reviews r WHERE r.id IN (SELECT review_id FROM new_rows) AND NOT r.reported;
    ELSIF TG_OP = 'UPDATE' THEN
        SELECT array_agg(DISTINCT r.product_id) INTO pids
        FROM reviews r
        WHERE r.id IN (SELECT review_id FROM old_rows UNION SELECT review_id FROM new_rows)
          AND NOT r.reported;
    ELSE
        SELECT array_agg(DISTINCT r.product_id) INTO pids
        FROM reviews r WHERE r.id IN (SELECT review_id FROM old_rows) AND NOT r.reported;
    END IF;
    IF pids IS NULL THEN
        RETURN NULL;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        SELECT ph.cmin::text::bigint INTO written_by
        FROM reviews_photos ph WHERE ph.id = (SELECT id FROM new_rows LIMIT 1);
    END IF;
    PERFORM read_model_refresh_lists(pids, written_by);
    RETURN NULL;
END
$$;

-- product_ratings and characteristics -> the product's meta.
CREATE FUNCTION read_model_meta_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    pids integer[];
    written_by bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(DISTINCT product_id) INTO pids FROM new_rows;
    ELSIF TG_OP = 'UPDATE' THEN
        SELECT array_agg(DISTINCT product_id) INTO pids
        FROM (SELECT product_id FROM old_rows UNION SELECT product_id FROM new_rows) t;
    ELSE
        SELECT array_agg(DISTINCT product_id) INTO pids FROM old_rows;
    END IF;
    IF pids IS NULL THEN
        RETURN NULL;
    END IF;
    IF TG_OP <> 'DELETE' AND TG_TABLE_NAME = 'product_ratings' THEN
        SELECT pr.cmin::text::bigint INTO written_by
        FROM product_ratings pr WHERE pr.product_id = (SELECT product_id FROM new_rows LIMIT 1);
    ELSIF TG_OP <> 'DELETE' THEN
        SELECT ch.cmin::text::bigint INTO written_by
        FROM characteristics ch WHERE ch.id = (SELECT id FROM new_rows LIMIT 1);
    END IF;
    PERFORM read_model_refresh_meta(pids, written_by);
    RETURN NULL;
END
$$;

-- Postgres allows transition tables on single-event triggers only: three per
-- table. The loader disables every `read_model_%` trigger for its COPY and
-- builds the documents set-based at the end (read_model_build_all).
CREATE TRIGGER read_model_reviews_insert AFTER INSERT ON reviews
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION read_model_reviews_changed();
CREATE TRIGGER read_model_reviews_update AFTER UPDATE ON reviews
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION read_model_reviews_changed();
CREATE TRIGGER read_model_reviews_delete AFTER DELETE ON reviews
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION read_model_reviews_changed();

CREATE TRIGGER read_model_photos_insert AFTER INSERT ON reviews_photos
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION read_model_photos_changed();
CREATE TRIGGER read_model_photos_update AFTER UPDATE ON reviews_photos
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION read_model_photos_changed();
CREATE TRIGGER read_model_photos_delete AFTER DELETE ON reviews_photos
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION read_model_photos_changed();

CREATE TRIGGER read_model_ratings_insert AFTER INSERT ON product_ratings
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION read_model_meta_changed();
CREATE TRIGGER read_model_ratings_update AFTER UPDATE ON product_ratings
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION read_model_meta_changed();
CREATE TRIGGER read_model_ratings_delete AFTER DELETE ON product_ratings
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION read_model_meta_changed();

CREATE TRIGGER read_model_characteristics_insert AFTER INSERT ON characteristics
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION read_model_meta_changed();
CREATE TRIGGER read_model_characteristics_update AFTER UPDATE ON characteristics
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION read_model_meta_changed();
CREATE TRIGGER read_model_characteristics_delete AFTER DELETE ON characteristics
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION read_model_meta_changed();

-- The documents of the rows already there (a database loaded before this
-- migration): built in this migration's transaction.
SELECT read_model_build_all();
