-- Each answer's photos, ready: the comma-joined elements of its "photos"
-- (answers_photos.element, in photo id order), kept in the answer's own row
-- (issue 21, decision 0050), as the reviews service keeps its reviews'
-- (reviews migration 005, decision 0049). An answers page is then its index
-- range and the rows' stored bytes, with no probe of answers_photos per
-- answer.
--
-- NULL: no photos. Not a generated column (it reads another table): a row
-- trigger on answers_photos keeps it, so every way a photo is written (the
-- service's INSERT_ANSWER, a hand-run INSERT, UPDATE or DELETE) keeps it
-- current. An answer without photos (most POSTs) fires nothing; the
-- service's POST writes the column with the answer, and the trigger only
-- finds it there (queries.INSERT_ANSWER). The loader disables the trigger
-- for its COPY and fills the column in one statement (data/loader.py).
--
-- The questions list's read model (004) is unaffected: it lists photo urls,
-- not these elements, and reads them from answers_photos. The trigger's
-- UPDATE of an answer changes none of the columns the read model's answer
-- trigger compares, so that trigger rebuilds nothing for it.

ALTER TABLE answers ADD COLUMN photo_elements text;

-- The answer's row is locked before its photos are read, in a statement of
-- their own: under READ COMMITTED that read then sees every photo committed
-- by a writer that held the lock before, so two transactions writing photos
-- of one answer cannot each leave out the other's.
CREATE FUNCTION qa_refresh_answer_photo_elements(aid integer) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM answers WHERE id = aid FOR UPDATE;
    UPDATE answers
    SET photo_elements = (
        SELECT string_agg(ph.element, ',' ORDER BY ph.id)
        FROM answers_photos ph WHERE ph.answer_id = aid
    )
    WHERE id = aid;
END
$$;

CREATE FUNCTION qa_answers_photos_stored() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        UPDATE answers SET photo_elements = NULL WHERE photo_elements IS NOT NULL;
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' AND (
        SELECT strpos(a.photo_elements, NEW.element) > 0 FROM answers a WHERE a.id = NEW.answer_id
    ) THEN
        -- Written with its answer, in the same statement (queries.INSERT_ANSWER).
        -- Sound: an element names its photo's id, unique, and inside a JSON
        -- string every " is escaped, so it is found only where it was put.
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        PERFORM qa_refresh_answer_photo_elements(OLD.answer_id);
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.answer_id <> OLD.answer_id) THEN
        PERFORM qa_refresh_answer_photo_elements(NEW.answer_id);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER qa_answers_photos_stored
    AFTER INSERT OR UPDATE OR DELETE ON answers_photos
    FOR EACH ROW EXECUTE FUNCTION qa_answers_photos_stored();
CREATE TRIGGER qa_answers_photos_truncated
    AFTER TRUNCATE ON answers_photos
    FOR EACH STATEMENT EXECUTE FUNCTION qa_answers_photos_stored();

-- Every answer's column at once, set-based, from answers_photos: the loader's
-- step after its COPY (with the trigger off), and here for a database loaded
-- before this migration (minutes at full scale; deployments with data
-- migrate before starting the new build, as for 008). The rewritten rows'
-- old versions are left for vacuum.
CREATE FUNCTION qa_fill_answer_photo_elements() RETURNS void LANGUAGE sql AS $$
    UPDATE answers a
    SET photo_elements = p.elements
    FROM (
        SELECT answer_id, string_agg(element, ',' ORDER BY id) AS elements
        FROM answers_photos GROUP BY answer_id
    ) p
    WHERE p.answer_id = a.id;
$$;

-- The read model's triggers see no change they show in this fill: off for it
-- (the answers trigger would compare every rewritten row to nothing it shows).
ALTER TABLE answers DISABLE TRIGGER qa_answers_updated;
SELECT qa_fill_answer_photo_elements();
ALTER TABLE answers ENABLE TRIGGER qa_answers_updated;
