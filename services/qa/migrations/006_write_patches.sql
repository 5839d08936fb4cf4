-- Two more writes keep the read model (004_read_model.sql) without the
-- rebuild of a question's element from its answers and photos
-- (docs/decisions/0039):
--
-- 1. A new question (POST /qa/questions). Until its transaction commits no
--    other transaction sees it, so none can write its answers (INSERT_ANSWER
--    reads its parent first): its element is built from the row alone, with
--    no advisory lock and no per-question loop. Should a visible answer
--    already name its id (rows written outside the service), the rebuild
--    runs as before.
-- 2. A helpful vote on an answer (PUT /qa/answers/:id/helpful), when it does
--    not move the answer past another one (answers go helpful DESC, id DESC):
--    the digits after the answer's `,"helpfulness":` are patched in place,
--    under the rebuild's advisory lock, as 005 does for a question's vote.
--    The member starts with `"<id>":{"id":<id>,`, which occurs once in an
--    element (inside a JSON string every " is escaped), and its first
--    `,"helpfulness":` after that is its own (body and answerer_name come
--    before it, and are strings). The patch applies only when the digits
--    there are the value the vote changed from; otherwise, and when the vote
--    reorders the answers, the element is rebuilt.

CREATE FUNCTION qa_patch_answer_helpful(qid integer, aid integer, old_helpful integer)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    key constant bytea := convert_to(',"helpfulness":', 'UTF8');
    old_digits constant bytea := convert_to(old_helpful::text || ',', 'UTF8');
    doc bytea;
    member_at integer;
    key_at integer;
    digits_at integer;
BEGIN
    PERFORM pg_advisory_xact_lock(29025, qid);
    -- A new snapshot (READ COMMITTED, next statement): every vote and answer
    -- committed before the lock. Would the vote move the answer past one?
    IF EXISTS (
        SELECT 1 FROM answers a
        WHERE a.question_id = qid AND NOT a.reported AND a.id <> aid
          AND ((a.helpful = old_helpful AND a.id > aid)
               OR (a.helpful = old_helpful + 1 AND a.id < aid))
    ) THEN
        RETURN false;
    END IF;
    SELECT d.element INTO doc FROM question_documents d WHERE d.question_id = qid;
    IF doc IS NULL THEN
        RETURN false;
    END IF;
    member_at := position(convert_to('"' || aid || '":{"id":' || aid || ',', 'UTF8') IN doc);
    IF member_at = 0 THEN
        RETURN false;
    END IF;
    key_at := position(key IN substring(doc FROM member_at));
    IF key_at = 0 THEN
        RETURN false;
    END IF;
    digits_at := member_at + key_at - 1 + length(key);
    IF substring(doc FROM digits_at FOR length(old_digits)) IS DISTINCT FROM old_digits THEN
        RETURN false;
    END IF;
    UPDATE question_documents
    SET element = overlay(doc PLACING convert_to((old_helpful + 1)::text, 'UTF8')
                          FROM digits_at FOR length(old_digits) - 1)
    WHERE question_id = qid;
    RETURN true;
END
$$;

CREATE OR REPLACE FUNCTION qa_questions_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        -- New questions: built from the rows alone, unless a visible answer
        -- names one. One index probe per new row (LATERAL ... LIMIT 1): a
        -- join was planned as a scan of all the answers (140 ms at SCALE 0.1).
        IF NOT EXISTS (
            SELECT 1 FROM new_rows n
            CROSS JOIN LATERAL (
                SELECT 1 FROM answers a WHERE a.question_id = n.id AND NOT a.reported LIMIT 1
            ) answered
        ) THEN
            INSERT INTO question_documents (question_id, product_id, helpful, element)
            SELECT n.id, n.product_id, n.helpful,
                   qa_question_element(n.id, n.body, n.date_written, n.asker_name, n.helpful,
                                       NULL)
            FROM new_rows n
            WHERE NOT n.reported
            ON CONFLICT (question_id) DO UPDATE
                SET product_id = excluded.product_id, helpful = excluded.helpful,
                    element = excluded.element;
            RETURN NULL;
        END IF;
        PERFORM qa_refresh_question_documents(
            ARRAY(SELECT n.id FROM new_rows n WHERE NOT n.reported));
    ELSIF TG_OP = 'UPDATE' THEN
        -- One visible question whose helpful alone changed: patch the number (005).
        IF (SELECT count(*) FROM new_rows) = 1 AND (
            SELECT qa_patch_question_helpful(n.id, o.helpful, n.helpful)
            FROM old_rows o JOIN new_rows n ON n.id = o.id
            WHERE o.helpful IS DISTINCT FROM n.helpful
              AND NOT o.reported AND NOT n.reported
              AND (o.product_id, o.body, o.date_written, o.asker_name)
                  IS NOT DISTINCT FROM (n.product_id, n.body, n.date_written, n.asker_name))
        THEN
            RETURN NULL;
        END IF;
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

CREATE OR REPLACE FUNCTION qa_answers_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM qa_refresh_question_documents(
            ARRAY(SELECT n.question_id FROM new_rows n WHERE NOT n.reported),
            -- this statement's command id: one of its rows' cmin (all share it)
            (SELECT a.cmin::text::bigint FROM answers a
             WHERE a.id = (SELECT n.id FROM new_rows n LIMIT 1)));
    ELSIF TG_OP = 'UPDATE' THEN
        -- One visible answer voted helpful (+1) and nothing else changed: patch.
        IF (SELECT count(*) FROM new_rows) = 1 AND (
            SELECT qa_patch_answer_helpful(n.question_id, n.id, o.helpful)
            FROM old_rows o JOIN new_rows n ON n.id = o.id
            WHERE n.helpful = o.helpful + 1
              AND NOT o.reported AND NOT n.reported
              AND (o.question_id, o.body, o.date_written, o.answerer_name)
                  IS NOT DISTINCT FROM (n.question_id, n.body, n.date_written, n.answerer_name))
        THEN
            RETURN NULL;
        END IF;
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
