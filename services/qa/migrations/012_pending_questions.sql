-- An answer's write no longer rebuilds or patches its question's read-model
-- element in its own transaction (docs/decisions/0053). It marks the
-- question pending instead, and a relay (services/qa/read_model_relay.py)
-- rebuilds the pending questions in batches after the commit. The questions
-- list is never served stale from this: a product with a pending question is
-- read from the tables (queries.QUESTIONS_DOCUMENT_UNLESS_PENDING) until its rebuild commits.
--
-- Why: a statement trigger with transition tables and the patch behind it
-- cost an answer's vote about 230 µs of Postgres time (pgbench, one client,
-- SCALE 0.1); a row trigger that marks the question costs 30-50 µs, and the
-- relay's set-based rebuild about 85 µs a question. That moves the write
-- past issue 19's target and keeps issue 21's one-indexed-read list.
-- The questions' own writes keep their triggers (004-009): they are cheap.
--
-- Invariants:
-- * A committed answer write has marked its question pending (row trigger,
--   same transaction), or changed nothing the list shows.
-- * A question's pending row goes only with a rebuild that saw every write
--   committed before the row went: the relay deletes the rows it claims, takes
--   each question's advisory lock (the one 004's rebuild and the questions'
--   patches take), then rebuilds in a later statement, with a newer snapshot.
--   A writer that marks a question the relay has claimed waits for the relay's
--   commit on the row's lock (ON CONFLICT DO UPDATE locks an existing row;
--   DO NOTHING would not) and then marks it again; one that marked first holds
--   the row, and the relay skips it (SKIP LOCKED).
-- * A page is read from question_documents only while its product has no
--   pending row; the row and the write commit together, and the row goes
--   with the rebuilt element, so a reader sees either both old or both new.

CREATE TABLE question_documents_pending (
    question_id  integer PRIMARY KEY,
    product_id   integer NOT NULL
);
CREATE INDEX question_documents_pending_product_idx
    ON question_documents_pending (product_id);

-- Row triggers: no transition tables to fill, and the WHEN clauses run in the
-- executor, so an update the list cannot show (a second report) costs
-- nothing. An answer whose question does not exist marks nothing.
CREATE FUNCTION qa_mark_question_pending() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO question_documents_pending (question_id, product_id)
        SELECT q.id, q.product_id FROM questions q WHERE q.id = OLD.question_id
        ON CONFLICT (question_id) DO UPDATE SET product_id = excluded.product_id;
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.question_id <> OLD.question_id) THEN
        INSERT INTO question_documents_pending (question_id, product_id)
        SELECT q.id, q.product_id FROM questions q WHERE q.id = NEW.question_id
        ON CONFLICT (question_id) DO UPDATE SET product_id = excluded.product_id;
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER qa_answers_inserted ON answers;
DROP TRIGGER qa_answers_updated ON answers;
DROP TRIGGER qa_answers_deleted ON answers;
-- A photo's change reaches the list through its answer's photo_elements
-- (011's row trigger rewrites them), which the update trigger below watches.
DROP TRIGGER qa_answers_photos_inserted ON answers_photos;
DROP TRIGGER qa_answers_photos_updated ON answers_photos;
DROP TRIGGER qa_answers_photos_deleted ON answers_photos;
DROP FUNCTION qa_answers_inserted();
DROP FUNCTION qa_answers_changed();
DROP FUNCTION qa_answers_photos_changed();
DROP FUNCTION qa_patch_new_answer(integer);
DROP FUNCTION qa_patch_answer_helpful(integer, integer, integer);
DROP FUNCTION qa_patch_answer_report(integer, integer, integer);

CREATE TRIGGER qa_answers_inserted AFTER INSERT ON answers
    FOR EACH ROW WHEN (NOT NEW.reported) EXECUTE FUNCTION qa_mark_question_pending();
CREATE TRIGGER qa_answers_updated AFTER UPDATE ON answers
    FOR EACH ROW WHEN (
        (OLD.question_id, OLD.body, OLD.date_written, OLD.answerer_name, OLD.helpful,
         OLD.reported, OLD.photo_elements)
        IS DISTINCT FROM
        (NEW.question_id, NEW.body, NEW.date_written, NEW.answerer_name, NEW.helpful,
         NEW.reported, NEW.photo_elements)
        AND NOT (OLD.reported AND NEW.reported))
    EXECUTE FUNCTION qa_mark_question_pending();
CREATE TRIGGER qa_answers_deleted AFTER DELETE ON answers
    FOR EACH ROW WHEN (NOT OLD.reported) EXECUTE FUNCTION qa_mark_question_pending();

-- The relay's step: claim up to `batch` pending questions, rebuild them, and
-- return how many it claimed (0: nothing pending that another relay or an
-- open write does not hold). One call is one transaction.
CREATE FUNCTION qa_rebuild_pending_questions(batch integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    ids integer[];
    qid integer;
BEGIN
    WITH claimed AS (
        SELECT question_id FROM question_documents_pending
        ORDER BY question_id LIMIT batch
        FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM question_documents_pending p USING claimed c
        WHERE p.question_id = c.question_id
        RETURNING p.question_id
    )
    SELECT array_agg(question_id ORDER BY question_id) INTO ids FROM gone;
    IF ids IS NULL THEN
        RETURN 0;
    END IF;
    -- In id order, as 004's rebuild: no deadlock between two of them.
    FOREACH qid IN ARRAY ids LOOP
        PERFORM pg_advisory_xact_lock(29025, qid);
    END LOOP;
    -- A new snapshot (READ COMMITTED, next statement): every write committed
    -- before the locks were granted. The members as 004's qa_answer_member
    -- writes them, from the answer's stored head (008) after its
    -- '{"answer_id":<id>' (13 characters and the id's digits): no to_json or
    -- to_char per answer. tests/qa/test_pending_questions.py holds the
    -- result to 004's rebuild byte for byte.
    INSERT INTO question_documents (question_id, product_id, helpful, element)
    SELECT q.id, q.product_id, q.helpful,
           qa_question_element(q.id, q.body, q.date_written, q.asker_name, q.helpful, (
               SELECT string_agg(
                          '"' || a.id || '":{"id":' || a.id
                          || substr(a.element_head, 14 + length(a.id::text)) || a.helpful
                          || ',"photos":['
                          || CASE WHEN a.photo_elements IS NULL THEN '' ELSE coalesce((
                                 SELECT string_agg(to_json(ph.url)::text, ',' ORDER BY ph.id)
                                 FROM answers_photos ph
                                 WHERE ph.answer_id = a.id AND ph.url IS NOT NULL), '') END
                          || ']}',
                      ',' ORDER BY a.helpful DESC, a.id DESC)
               FROM answers a
               WHERE a.question_id = q.id AND NOT a.reported))
    FROM questions q
    WHERE q.id = ANY(ids) AND NOT q.reported
    ON CONFLICT (question_id) DO UPDATE
        SET product_id = excluded.product_id, helpful = excluded.helpful,
            element = excluded.element;
    DELETE FROM question_documents d
    WHERE d.question_id = ANY(ids)
      AND NOT EXISTS (SELECT 1 FROM questions q WHERE q.id = d.question_id AND NOT q.reported);
    RETURN cardinality(ids);
END
$$;
