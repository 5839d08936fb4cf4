-- The read model of GET /qa/questions (issue 21): each visible question as
-- the JSON element of the `results` array it is sent as (its non-reported
-- answers embedded), ready, so that a cold read is one indexed read of
-- ready bytes (queries.QUESTIONS_DOCUMENT: the page's rows in the list's
-- order, comma-joined) instead of a join and a fold in Python.
--
-- One row per question, not one document per product: a write then rebuilds
-- one question's element, whatever the size of its product. A per-product
-- document (every element comma-joined, with their end offsets) was built
-- and measured first: each write rebuilt and rewrote the whole product,
-- ~1 ms for 3 questions and ~47 ms for 200 (docs/decisions/0036).
--
-- A reported question has no row. Kept current by the triggers below, in the
-- transaction of every write to questions, answers or answers_photos; the
-- loader disables them around its COPY and builds every row at once
-- (qa_build_question_documents) with the same element functions.
CREATE TABLE question_documents (
    question_id  integer PRIMARY KEY,
    product_id   integer NOT NULL,
    helpful      integer NOT NULL,
    element      bytea   NOT NULL
);
-- The list's order, as questions_product_helpful_idx has it.
CREATE INDEX question_documents_product_idx
    ON question_documents (product_id, helpful DESC, question_id DESC);

-- One answer as a member of its question's "answers" object, and one
-- question as an element of "results": string concatenation, not
-- json_build_object (whose `"key" : value` spacing differs from orjson).
-- to_json(text) escapes exactly as orjson does (", \, \b \f \n \r \t, other
-- control characters as lowercase \u00XX; DEL, U+2028, astral characters
-- and / as they are); tests/qa/test_read_model.py holds both to it.
-- LANGUAGE sql, STABLE (to_char is), one expression: inlined by the planner.
CREATE FUNCTION qa_answer_member(
    id integer, body text, date_written timestamptz, answerer_name text, helpful integer,
    photo_urls text  -- the photos' JSON strings, comma-joined, in photo id order; NULL: none
) RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT '"' || id || '":{"id":' || id
        || ',"body":' || to_json(body)::text
        || ',"date":"' || to_char(date_written AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
        || '","answerer_name":' || to_json(answerer_name)::text
        || ',"helpfulness":' || helpful
        || ',"photos":[' || coalesce(photo_urls, '') || ']}'
$$;

CREATE FUNCTION qa_question_element(
    id integer, body text, date_written timestamptz, asker_name text, helpful integer,
    answers text  -- the answers' members, comma-joined, in order; NULL: none
) RETURNS bytea LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT convert_to(
        '{"question_id":' || id
        || ',"question_body":' || to_json(body)::text
        || ',"question_date":"' || to_char(date_written AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
        || '","asker_name":' || to_json(asker_name)::text
        || ',"question_helpfulness":' || helpful
        || ',"reported":false,"answers":{' || coalesce(answers, '') || '}}',
        'UTF8')
$$;

-- Rebuild the rows of `ids` (question ids) from the tables. Each question's
-- advisory lock is taken first (in id order: no deadlock between two
-- statements touching several) and the rows are read by the next statement,
-- which in READ COMMITTED takes a new snapshot: it sees every write committed
-- before the lock was granted. Without the lock two concurrent writes to one
-- question (two of its answers) would each build from a snapshot without the
-- other's change and the second upsert would overwrite the first's. (Under
-- REPEATABLE READ the upsert of a row another transaction changed fails with
-- a serialization error instead; the service writes in READ COMMITTED.)
--
-- written_by: the command id of the rows that call for the rebuild. A row
-- this transaction rebuilt at a later command already saw them (its
-- snapshot saw every earlier command, and the lock kept other writers out
-- since), so it is left alone: INSERT_ANSWER writes an answer and its photos
-- in one statement; the first of its two triggers to run rebuilds the
-- question after both, and the second skips it instead of building it twice.
CREATE FUNCTION qa_refresh_question_documents(ids integer[], written_by bigint DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    qid integer;
BEGIN
    FOR qid IN SELECT DISTINCT x FROM unnest(ids) AS x WHERE x IS NOT NULL ORDER BY x LOOP
        -- 0x7161 = 'qa': this key space's first half, the question id the second.
        PERFORM pg_advisory_xact_lock(29025, qid);
        IF written_by IS NOT NULL AND EXISTS (
            SELECT 1 FROM question_documents d
            WHERE d.question_id = qid AND d.xmin = pg_current_xact_id()::xid
              AND d.cmin::text::bigint > written_by
        ) THEN
            CONTINUE;
        END IF;
        INSERT INTO question_documents (question_id, product_id, helpful, element)
        SELECT q.id, q.product_id, q.helpful,
               qa_question_element(q.id, q.body, q.date_written, q.asker_name, q.helpful, (
                   SELECT string_agg(qa_answer_member(
                              a.id, a.body, a.date_written, a.answerer_name, a.helpful, (
                                  SELECT string_agg(to_json(ph.url)::text, ',' ORDER BY ph.id)
                                  FROM answers_photos ph
                                  WHERE ph.answer_id = a.id AND ph.url IS NOT NULL)),
                          ',' ORDER BY a.helpful DESC, a.id DESC)
                   FROM answers a
                   WHERE a.question_id = q.id AND NOT a.reported))
        FROM questions q
        WHERE q.id = qid AND NOT q.reported
        ON CONFLICT (question_id) DO UPDATE
            SET product_id = excluded.product_id, helpful = excluded.helpful,
                element = excluded.element;
        IF NOT FOUND THEN  -- reported or gone
            DELETE FROM question_documents WHERE question_id = qid;
        END IF;
    END LOOP;
END
$$;

-- Statement-level AFTER triggers with transition tables: they run once a
-- statement (every CTE of the service's one-statement writes included) is
-- done, so they see the answer and the photos INSERT_ANSWER wrote together,
-- and rebuild each touched question once per statement. Updates that change
-- nothing the list shows (a second report) rebuild nothing.
-- SECURITY INVOKER: the app role (runway_qa) has DML on every table,
-- question_documents included, and EXECUTE on functions is PUBLIC's by default.

CREATE FUNCTION qa_questions_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM qa_refresh_question_documents(
            ARRAY(SELECT n.id FROM new_rows n WHERE NOT n.reported));
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM qa_refresh_question_documents(ARRAY(
            SELECT n.id
            FROM old_rows o JOIN new_rows n ON n.id = o.id
            WHERE (o.product_id, o.body, o.date_written, o.asker_name, o.helpful, o.reported)
                  IS DISTINCT FROM
                  (n.product_id, n.body, n.date_written, n.asker_name, n.helpful, n.reported)
              AND NOT (o.reported AND n.reported)
            UNION ALL  -- an id changed: both sides
            SELECT o.id FROM old_rows o WHERE NOT EXISTS (SELECT 1 FROM new_rows n WHERE n.id = o.id)
            UNION ALL
            SELECT n.id FROM new_rows n WHERE NOT EXISTS (SELECT 1 FROM old_rows o WHERE o.id = n.id)));
    ELSE
        PERFORM qa_refresh_question_documents(ARRAY(SELECT o.id FROM old_rows o));
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION qa_answers_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM qa_refresh_question_documents(
            ARRAY(SELECT n.question_id FROM new_rows n WHERE NOT n.reported),
            -- this statement's command id: one of its rows' cmin (all share it)
            (SELECT a.cmin::text::bigint FROM answers a
             WHERE a.id = (SELECT n.id FROM new_rows n LIMIT 1)));
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM qa_refresh_question_documents(ARRAY(
            SELECT unnest(ARRAY[o.question_id, n.question_id])
            FROM old_rows o JOIN new_rows n ON n.id = o.id
            WHERE (o.question_id, o.body, o.date_written, o.answerer_name, o.helpful, o.reported)
                  IS DISTINCT FROM
                  (n.question_id, n.body, n.date_written, n.answerer_name, n.helpful, n.reported)
              AND NOT (o.reported AND n.reported)
            UNION ALL
            SELECT o.question_id FROM old_rows o WHERE NOT EXISTS (SELECT 1 FROM new_rows n WHERE n.id = o.id)
            UNION ALL
            SELECT n.question_id FROM new_rows n WHERE NOT EXISTS (SELECT 1 FROM old_rows o WHERE o.id = n.id)));
    ELSE
        PERFORM qa_refresh_question_documents(
            ARRAY(SELECT o.question_id FROM old_rows o WHERE NOT o.reported));
    END IF;
    RETURN NULL;
END
$$;

-- A photo's change shows in its answer's question's element.
CREATE FUNCTION qa_answers_photos_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM qa_refresh_question_documents(
            ARRAY(
                SELECT a.question_id FROM answers a
                WHERE a.id IN (SELECT n.answer_id FROM new_rows n WHERE n.url IS NOT NULL)),
            -- this statement's command id: one of its rows' cmin (all share it)
            (SELECT ph.cmin::text::bigint FROM answers_photos ph
             WHERE ph.id = (SELECT n.id FROM new_rows n LIMIT 1)));
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM qa_refresh_question_documents(ARRAY(
            SELECT a.question_id FROM answers a
            WHERE a.id IN (SELECT n.answer_id FROM new_rows n UNION SELECT o.answer_id FROM old_rows o)));
    ELSE
        PERFORM qa_refresh_question_documents(ARRAY(
            SELECT a.question_id FROM answers a
            WHERE a.id IN (SELECT o.answer_id FROM old_rows o WHERE o.url IS NOT NULL)));
    END IF;
    RETURN NULL;
END
$$;

-- One trigger per event: a transition table belongs to one event only.
CREATE TRIGGER qa_questions_inserted AFTER INSERT ON questions
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION qa_questions_changed();
CREATE TRIGGER qa_questions_updated AFTER UPDATE ON questions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION qa_questions_changed();
CREATE TRIGGER qa_questions_deleted AFTER DELETE ON questions
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION qa_questions_changed();

CREATE TRIGGER qa_answers_inserted AFTER INSERT ON answers
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION qa_answers_changed();
CREATE TRIGGER qa_answers_updated AFTER UPDATE ON answers
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION qa_answers_changed();
CREATE TRIGGER qa_answers_deleted AFTER DELETE ON answers
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION qa_answers_changed();

CREATE TRIGGER qa_answers_photos_inserted AFTER INSERT ON answers_photos
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION qa_answers_photos_changed();
CREATE TRIGGER qa_answers_photos_updated AFTER UPDATE ON answers_photos
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION qa_answers_photos_changed();
CREATE TRIGGER qa_answers_photos_deleted AFTER DELETE ON answers_photos
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION qa_answers_photos_changed();

-- Every question's row at once, set-based (hash aggregates, no per-question
-- lookups), into an empty question_documents: the loader's last step, and
-- here for a database loaded before this migration. Returns the rows built.
CREATE FUNCTION qa_build_question_documents() RETURNS bigint LANGUAGE sql AS $$
    WITH photos AS (
        SELECT answer_id, string_agg(to_json(url)::text, ',' ORDER BY id) AS urls
        FROM answers_photos
        WHERE url IS NOT NULL
        GROUP BY answer_id
    ), members AS (
        SELECT a.question_id,
               string_agg(qa_answer_member(a.id, a.body, a.date_written, a.answerer_name,
                                           a.helpful, ph.urls),
                          ',' ORDER BY a.helpful DESC, a.id DESC) AS answers
        FROM answers a LEFT JOIN photos ph ON ph.answer_id = a.id
        WHERE NOT a.reported
        GROUP BY a.question_id
    ), built AS (
        INSERT INTO question_documents (question_id, product_id, helpful, element)
        SELECT q.id, q.product_id, q.helpful,
               qa_question_element(q.id, q.body, q.date_written, q.asker_name, q.helpful,
                                   m.answers)
        FROM questions q LEFT JOIN members m ON m.question_id = q.id
        WHERE NOT q.reported
        ORDER BY q.product_id, q.helpful DESC, q.id DESC  -- a product's rows together
        RETURNING 1
    )
    SELECT count(*) FROM built
$$;

-- A database loaded before this migration gets its rows now.
SELECT qa_build_question_documents();
