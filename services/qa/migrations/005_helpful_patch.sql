-- A helpful vote on a question (PUT /qa/questions/:id/helpful) changes one
-- number of its read-model element and its place in the list: the number is
-- patched in place instead of the element being rebuilt from the question's
-- answers and photos (docs/decisions/0038). Rebuilding cost the vote
-- +185-234 us of Postgres (0036); a patch reads and writes one row.
--
-- `,"question_helpfulness":` occurs once in an element, outside every string
-- (inside a JSON string each " is escaped), so the first match is the key.
-- The patch applies only if the row holds what the vote changed from (its
-- helpful column and the digits after the key); otherwise, or when the
-- statement changed more than one question or anything but helpful, the
-- trigger rebuilds as before. The advisory lock is the rebuild's
-- (004_read_model.sql): a vote and a concurrent rebuild of the same question
-- take turns, and whichever runs second reads what the first committed.
CREATE FUNCTION qa_patch_question_helpful(qid integer, old_helpful integer, new_helpful integer)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    key constant bytea := convert_to(',"question_helpfulness":', 'UTF8');
BEGIN
    PERFORM pg_advisory_xact_lock(29025, qid);
    UPDATE question_documents d
    SET helpful = new_helpful,
        element = overlay(d.element PLACING convert_to(new_helpful::text, 'UTF8')
                          FROM position(key IN d.element) + length(key)
                          FOR length(old_helpful::text))
    WHERE d.question_id = qid
      AND d.helpful = old_helpful
      AND position(key IN d.element) > 0
      AND substring(d.element FROM position(key IN d.element) + length(key)
                    FOR length(old_helpful::text) + 1)
          = convert_to(old_helpful::text || ',', 'UTF8');
    RETURN FOUND;
END
$$;

CREATE OR REPLACE FUNCTION qa_questions_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM qa_refresh_question_documents(
            ARRAY(SELECT n.id FROM new_rows n WHERE NOT n.reported));
    ELSIF TG_OP = 'UPDATE' THEN
        -- One visible question whose helpful alone changed: patch the number.
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
