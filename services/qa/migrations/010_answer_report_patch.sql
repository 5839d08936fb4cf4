-- An answer's report (PUT /qa/answers/:id/report) hides it: its member is
-- cut out of its question's read-model element in place, instead of the
-- element being rebuilt from every answer and photo of the question
-- (docs/decisions/0045). The reverse of 007's insert.
--
-- Under the rebuild's advisory lock (004_read_model.sql), with a new snapshot:
-- a member starts with `"<id>":{"id":<id>,`, which occurs once in an element
-- (inside a JSON string every " is escaped). It ends where the member of the
-- next visible answer in the list's order (helpful DESC, id DESC; found with
-- answers_question_helpful_idx) starts, after a comma, or, when none follows,
-- at the end of the "answers" object, which with the element's own brace ends
-- every element (`}}`). Anything else (the question reported or without an
-- element, no such member, the next member not right after it, several rows
-- in one statement, another column changed too) rebuilds as before.

CREATE FUNCTION qa_patch_answer_report(qid integer, aid integer, helpful integer)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    doc bytea;
    next_id integer;
    at integer;
    upto integer;
    n integer;
BEGIN
    PERFORM pg_advisory_xact_lock(29025, qid);
    SELECT d.element INTO doc FROM question_documents d WHERE d.question_id = qid;
    IF doc IS NULL THEN
        RETURN false;
    END IF;
    at := position(convert_to('"' || aid || '":{"id":' || aid || ',', 'UTF8') IN doc);
    IF at = 0 THEN
        RETURN false;
    END IF;
    SELECT b.id INTO next_id FROM answers b
    WHERE b.question_id = qid AND NOT b.reported AND b.id <> aid
      AND (b.helpful < qa_patch_answer_report.helpful
           OR (b.helpful = qa_patch_answer_report.helpful AND b.id < aid))
    ORDER BY b.helpful DESC, b.id DESC
    LIMIT 1;
    IF next_id IS NOT NULL THEN
        upto := position(convert_to('"' || next_id || '":{"id":' || next_id || ',', 'UTF8') IN doc);
        IF upto <= at OR get_byte(doc, upto - 2) <> 44 THEN  -- after it, after a ","
            RETURN false;
        END IF;
    ELSE
        n := length(doc);
        IF substring(doc FROM n - 1) IS DISTINCT FROM '\x7d7d'::bytea THEN  -- "}}"
            RETURN false;
        END IF;
        upto := n - 1;
    END IF;
    -- Exactly one member in between (an element out of step with the table's
    -- order would have another): `":{"id":` only at the member's own start.
    IF position(convert_to('":{"id":', 'UTF8')
                IN substring(doc FROM at + length(aid::text) + 2
                             FOR upto - at - length(aid::text) - 2)) > 0 THEN
        RETURN false;
    END IF;
    IF next_id IS NOT NULL THEN
        doc := overlay(doc PLACING ''::bytea FROM at FOR upto - at);  -- member ","
    ELSE
        IF get_byte(doc, at - 2) = 123 THEN  -- "{": the only answer
            doc := overlay(doc PLACING ''::bytea FROM at FOR n - 1 - at);
        ELSE  -- "," member
            doc := overlay(doc PLACING ''::bytea FROM at - 1 FOR n - at);
        END IF;
    END IF;
    UPDATE question_documents SET element = doc WHERE question_id = qid;
    RETURN true;
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
        -- One visible answer reported and nothing else changed: cut it out (010).
        IF (SELECT count(*) FROM new_rows) = 1 AND (
            SELECT qa_patch_answer_report(n.question_id, n.id, n.helpful)
            FROM old_rows o JOIN new_rows n ON n.id = o.id
            WHERE NOT o.reported AND n.reported
              AND (o.question_id, o.body, o.date_written, o.answerer_name, o.helpful)
                  IS NOT DISTINCT FROM
                  (n.question_id, n.body, n.date_written, n.answerer_name, n.helpful))
        THEN
            RETURN NULL;
        END IF;
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
