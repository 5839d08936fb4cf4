-- A question's report (PUT /qa/questions/:id/report) hides it, and a hidden
-- question has no read-model element (004_read_model.sql): the element is
-- deleted directly instead of going through the rebuild, which found no
-- visible row to build and then deleted it (docs/decisions/0044). One row,
-- reported after the update, with the same id before and after; any other
-- update takes the paths it took before. The rebuild's advisory lock is
-- taken first, as every writer of an element takes it: a concurrent answer's
-- rebuild that runs after this transaction commits reads the question as
-- reported (its next statement's snapshot) and builds nothing, and one that
-- ran before it is deleted here. A second report deletes nothing.

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
        -- One question hidden by this update (a report): its element goes, under
        -- the rebuild's lock, without the rebuild (009).
        IF (SELECT count(*) FROM new_rows) = 1
           AND (SELECT n.reported FROM new_rows n)
           AND EXISTS (SELECT 1 FROM old_rows o JOIN new_rows n ON n.id = o.id) THEN
            PERFORM pg_advisory_xact_lock(29025, (SELECT n.id FROM new_rows n));
            DELETE FROM question_documents WHERE question_id = (SELECT n.id FROM new_rows n);
            RETURN NULL;
        END IF;
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
