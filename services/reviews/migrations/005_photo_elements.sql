-- Each review's photos, ready: the comma-joined elements of its "photos"
-- (reviews_photos.element, in photo id order), kept in the review's own row
-- (issue 21, decision 0049). A page is then its index range and the rows'
-- stored bytes, with no probe of reviews_photos per review: that lateral
-- aggregate was a third of a page of 5's statement time.
--
-- NULL: no photos. Not a generated column (it reads another table): a row
-- trigger on reviews_photos keeps it, so every way a photo is written (the
-- service's INSERT_REVIEW, a hand-run INSERT, UPDATE or DELETE) keeps it
-- current. A review without photos (most POST /reviews) fires nothing; the
-- service's POST writes the column with the review, and the trigger only
-- finds it there (queries.INSERT_REVIEW). The loader disables the trigger
-- for its COPY and fills the column in one statement (data/loader.py).

ALTER TABLE reviews ADD COLUMN photo_elements text;

-- The review's row is locked before its photos are read, in a statement of
-- their own: under READ COMMITTED that read then sees every photo committed
-- by a writer that held the lock before, so two transactions writing photos
-- of one review cannot each leave out the other's.
CREATE FUNCTION reviews_refresh_photo_elements(rid integer) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM reviews WHERE id = rid FOR UPDATE;
    UPDATE reviews
    SET photo_elements = (
        SELECT string_agg(ph.element, ',' ORDER BY ph.id)
        FROM reviews_photos ph WHERE ph.review_id = rid
    )
    WHERE id = rid;
END
$$;

CREATE FUNCTION reviews_photos_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        UPDATE reviews SET photo_elements = NULL WHERE photo_elements IS NOT NULL;
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' AND (
        SELECT strpos(r.photo_elements, NEW.element) > 0 FROM reviews r WHERE r.id = NEW.review_id
    ) THEN
        -- Written with its review, in the same statement (queries.INSERT_REVIEW).
        -- Sound: an element names its photo's id, unique, and inside a JSON
        -- string every " is escaped, so it is found only where it was put.
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        PERFORM reviews_refresh_photo_elements(OLD.review_id);
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.review_id <> OLD.review_id) THEN
        PERFORM reviews_refresh_photo_elements(NEW.review_id);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER reviews_photos_changed
    AFTER INSERT OR UPDATE OR DELETE ON reviews_photos
    FOR EACH ROW EXECUTE FUNCTION reviews_photos_changed();
CREATE TRIGGER reviews_photos_truncated
    AFTER TRUNCATE ON reviews_photos
    FOR EACH STATEMENT EXECUTE FUNCTION reviews_photos_changed();

-- Every review's column at once, set-based, from reviews_photos: the loader's
-- step after its COPY (with the trigger off), and here for a database loaded
-- before this migration (at full scale about a quarter of the reviews:
-- minutes; deployments with data migrate before starting the new build, as
-- for 004). The rewritten rows' old versions are left for vacuum.
CREATE FUNCTION reviews_fill_photo_elements() RETURNS void LANGUAGE sql AS $$
    UPDATE reviews r
    SET photo_elements = p.elements
    FROM (
        SELECT review_id, string_agg(element, ',' ORDER BY id) AS elements
        FROM reviews_photos GROUP BY review_id
    ) p
    WHERE p.review_id = r.id;
$$;

SELECT reviews_fill_photo_elements();
