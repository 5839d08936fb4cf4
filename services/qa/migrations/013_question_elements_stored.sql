-- GET /qa/questions from stored elements joined at read time (issue 19,
-- decision 0055), as the answers page (008, 011) and the reviews pages
-- (reviews 004, 005) already are: each question row stores its element up to
-- `"question_helpfulness":` (a generated column), each answer row its own
-- (008); the page statement (queries.QUESTIONS_PAGE) takes the product's
-- questions by questions_product_helpful_idx and each one's visible answers
-- by answers_question_helpful_idx, and joins the stored bytes in SQL.
--
-- This replaces the whole-element read model of 004-012 (question_documents
-- and its triggers): every answer write rewrote its question's element, which
-- cost the answer writes 90-210 us of Postgres each (0046) and kept them
-- under issue 19's rate. A stored column changes with its own row only, so
-- no write touches another row for the read's sake. A cold questions page
-- costs its answers' index probes instead (+30-35 us of Postgres a page of 5).
--
-- Rewrites questions once (seconds at SCALE 0.1; deployments with data
-- migrate before starting the new build, as for 008).

DROP TRIGGER qa_questions_inserted ON questions;
DROP TRIGGER qa_questions_updated ON questions;
DROP TRIGGER qa_questions_deleted ON questions;
DROP TRIGGER qa_answers_inserted ON answers;
DROP TRIGGER qa_answers_updated ON answers;
DROP TRIGGER qa_answers_deleted ON answers;
DROP TRIGGER qa_answers_photos_inserted ON answers_photos;
DROP TRIGGER qa_answers_photos_updated ON answers_photos;
DROP TRIGGER qa_answers_photos_deleted ON answers_photos;

DROP FUNCTION qa_questions_changed();
DROP FUNCTION qa_answers_changed();
DROP FUNCTION qa_answers_inserted();
DROP FUNCTION qa_answers_photos_changed();
DROP FUNCTION qa_build_question_documents();
DROP FUNCTION qa_refresh_question_documents(integer[], bigint);
DROP FUNCTION qa_patch_question_helpful(integer, integer, integer);
DROP FUNCTION qa_patch_answer_helpful(integer, integer, integer);
DROP FUNCTION qa_patch_answer_report(integer, integer, integer);
DROP FUNCTION qa_patch_new_answer(integer);
DROP FUNCTION qa_question_element(integer, text, timestamptz, text, integer, text);
DROP FUNCTION qa_answer_member(integer, text, timestamptz, text, integer, text);

DROP TABLE question_documents;

-- Everything of a question's element of "results" up to and including
-- `"question_helpfulness":`; the vote count, `"reported":false` and the
-- answers are appended at read time, so a vote changes a column, not these
-- bytes. plpgsql IMMUTABLE for the reasons of qa_answer_element_head (008).
CREATE FUNCTION qa_question_element_head(
    id integer, body text, date_written timestamptz, asker_name text
) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN '{"question_id":' || id::text
    || ',"question_body":' || to_json(body)::text
    || ',"question_date":"' || to_char(date_written AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
    || '","asker_name":' || to_json(asker_name)::text
    || ',"question_helpfulness":';
END
$$;

ALTER TABLE questions ADD COLUMN element_head text GENERATED ALWAYS AS (
    qa_question_element_head(id, body, date_written, asker_name)
) STORED;
