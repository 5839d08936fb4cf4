-- A new answer without photos (POST /qa/questions/:id/answers, most of them)
-- goes into its question's read-model element in place, instead of the
-- element being rebuilt from every answer and photo of the question, whose
-- cost grows with the question's answers (docs/decisions/0039).
--
-- Under the rebuild's advisory lock (004_read_model.sql), with a new snapshot:
-- the member goes right before the member of the answer that follows it in
-- the list's order (helpful DESC, id DESC; found with
-- answers_question_helpful_idx), or, when none does, at the end of the
-- "answers" object, which with the element's own brace ends every element
-- (`}}`). A member starts with `"<id>":{"id":<id>,`, which occurs once in an
-- element (inside a JSON string every " is escaped). Anything else (photos,
-- a reported answer or question, no such member, several answers in one
-- statement, a member already there) rebuilds as before.
CREATE FUNCTION qa_patch_new_answer(aid integer) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    a answers%ROWTYPE;
    doc bytea;
    member bytea;
    next_id integer;
    at integer;
    n integer;
BEGIN
    SELECT * INTO a FROM answers WHERE id = aid;
    IF NOT FOUND OR a.reported
       OR EXISTS (SELECT 1 FROM answers_photos ph WHERE ph.answer_id = aid) THEN
        RETURN false;
    END IF;
    PERFORM pg_advisory_xact_lock(29025, a.question_id);
    SELECT d.element INTO doc FROM question_documents d WHERE d.question_id = a.question_id;
    IF doc IS NULL
       OR position(convert_to('"' || aid || '":{"id":' || aid || ',', 'UTF8') IN doc) > 0 THEN
        RETURN false;
    END IF;
    member := convert_to(
        qa_answer_member(a.id, a.body, a.date_written, a.answerer_name, a.helpful, NULL), 'UTF8');
    SELECT b.id INTO next_id FROM answers b
    WHERE b.question_id = a.question_id AND NOT b.reported AND b.id <> aid
      AND (b.helpful < a.helpful OR (b.helpful = a.helpful AND b.id < aid))
    ORDER BY b.helpful DESC, b.id DESC
    LIMIT 1;
    IF next_id IS NOT NULL THEN
        at := position(convert_to('"' || next_id || '":{"id":' || next_id || ',', 'UTF8') IN doc);
        IF at = 0 THEN
            RETURN false;
        END IF;
        doc := overlay(doc PLACING member || '\x2c'::bytea FROM at FOR 0);  -- member ","
    ELSE
        n := length(doc);
        IF substring(doc FROM n - 1) IS DISTINCT FROM '\x7d7d'::bytea THEN  -- "}}"
            RETURN false;
        END IF;
        IF get_byte(doc, n - 3) = 123 THEN  -- "{": the first answer
            doc := overlay(doc PLACING member FROM n - 1 FOR 0);
        ELSE
            doc := overlay(doc PLACING '\x2c'::bytea || member FROM n - 1 FOR 0);
        END IF;
    END IF;
    UPDATE question_documents SET element = doc WHERE question_id = a.question_id;
    RETURN true;
END
$$;

-- The insert trigger gets a function of its own (qa_answers_changed keeps
-- serving updates and deletes; its INSERT branch is no longer reached).
CREATE FUNCTION qa_answers_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT count(*) FROM new_rows) = 1
       AND (SELECT qa_patch_new_answer(n.id) FROM new_rows n) THEN
        RETURN NULL;
    END IF;
    PERFORM qa_refresh_question_documents(
        ARRAY(SELECT n.question_id FROM new_rows n WHERE NOT n.reported),
        -- this statement's command id: one of its rows' cmin (all share it)
        (SELECT a.cmin::text::bigint FROM answers a
         WHERE a.id = (SELECT n.id FROM new_rows n LIMIT 1)));
    RETURN NULL;
END
$$;

DROP TRIGGER qa_answers_inserted ON answers;
CREATE TRIGGER qa_answers_inserted AFTER INSERT ON answers
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION qa_answers_inserted();
