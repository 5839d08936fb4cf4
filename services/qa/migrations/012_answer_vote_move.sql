-- A helpful vote that moves an answer past others moves its member in place
-- (docs/decisions/0054). Answers go helpful DESC, id DESC, so the first vote
-- on one of several answers at the same count (every new answer starts at 0)
-- moves it ahead of those with larger ids; 006 rebuilt the element from every
-- answer of the question then, which in bench.write_ab's vote run was half of
-- the votes. Now the member is cut out as 010 cuts a reported answer's, its
-- digits are patched as 006 patches them, and it goes back in before the
-- member that follows it now, as 007 places a new answer's.
--
-- Under the rebuild's advisory lock (004_read_model.sql), with a new snapshot:
-- every vote and answer committed before the lock is in the element and the
-- tables alike, and only this vote differs. The checks of 006, 007 and 010
-- hold: a member starts with `"<id>":{"id":<id>,`, once in an element; it ends
-- where the member of the next visible answer in the element's order (by the
-- count before the vote) starts, after a comma, or at the end of the "answers"
-- object (`}}`); exactly one member lies in between; its digits after its
-- `,"helpfulness":` are the count before the vote. Anything else rebuilds.
CREATE OR REPLACE FUNCTION qa_patch_answer_helpful(qid integer, aid integer, old_helpful integer)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    key constant bytea := convert_to(',"helpfulness":', 'UTF8');
    old_digits constant bytea := convert_to(old_helpful::text || ',', 'UTF8');
    head constant bytea := convert_to('"' || aid || '":{"id":' || aid || ',', 'UTF8');
    doc bytea;
    member bytea;
    member_at integer;  -- the member's first byte
    upto integer;       -- the byte after it: the next member's first, or the "}}"
    next_id integer;
    digits_at integer;
    n integer;
BEGIN
    PERFORM pg_advisory_xact_lock(29025, qid);
    SELECT d.element INTO doc FROM question_documents d WHERE d.question_id = qid;
    IF doc IS NULL THEN
        RETURN false;
    END IF;
    member_at := position(head IN doc);
    IF member_at = 0 THEN
        RETURN false;
    END IF;
    -- Would the vote move the answer past one? (006's check)
    IF NOT EXISTS (
        SELECT 1 FROM answers a
        WHERE a.question_id = qid AND NOT a.reported AND a.id <> aid
          AND ((a.helpful = old_helpful AND a.id > aid)
               OR (a.helpful = old_helpful + 1 AND a.id < aid))
    ) THEN
        -- No: the digits in place (006).
        digits_at := member_at - 1 + position(key IN substring(doc FROM member_at));
        IF digits_at < member_at THEN
            RETURN false;
        END IF;
        digits_at := digits_at + length(key);
        IF substring(doc FROM digits_at FOR length(old_digits)) IS DISTINCT FROM old_digits THEN
            RETURN false;
        END IF;
        UPDATE question_documents
        SET element = overlay(doc PLACING convert_to((old_helpful + 1)::text, 'UTF8')
                              FROM digits_at FOR length(old_digits) - 1)
        WHERE question_id = qid;
        RETURN true;
    END IF;

    -- Yes. Cut the member out (010): it ends where the next one in the
    -- element's order (the count before the vote) starts, or at the "}}".
    SELECT b.id INTO next_id FROM answers b
    WHERE b.question_id = qid AND NOT b.reported AND b.id <> aid
      AND (b.helpful < old_helpful OR (b.helpful = old_helpful AND b.id < aid))
    ORDER BY b.helpful DESC, b.id DESC
    LIMIT 1;
    n := length(doc);
    IF next_id IS NOT NULL THEN
        upto := position(convert_to('"' || next_id || '":{"id":' || next_id || ',', 'UTF8') IN doc);
        IF upto <= member_at OR get_byte(doc, upto - 2) <> 44 THEN  -- after it, after a ","
            RETURN false;
        END IF;
        member := substring(doc FROM member_at FOR upto - 1 - member_at);
        doc := overlay(doc PLACING ''::bytea FROM member_at FOR upto - member_at);  -- member ","
    ELSE
        -- The last member, after a "," (it moves ahead of one, so it is not the only one).
        IF substring(doc FROM n - 1) IS DISTINCT FROM '\x7d7d'::bytea  -- "}}"
           OR get_byte(doc, member_at - 2) <> 44 THEN
            RETURN false;
        END IF;
        member := substring(doc FROM member_at FOR n - 1 - member_at);
        doc := overlay(doc PLACING ''::bytea FROM member_at - 1 FOR n - member_at);  -- "," member
    END IF;
    -- Exactly one member: `":{"id":` only at its own start.
    IF position(convert_to('":{"id":', 'UTF8')
                IN substring(member FROM length(aid::text) + 3)) > 0 THEN
        RETURN false;
    END IF;
    -- Its digits (006), within the member.
    digits_at := position(key IN member);
    IF digits_at = 0 THEN
        RETURN false;
    END IF;
    digits_at := digits_at + length(key);
    IF substring(member FROM digits_at FOR length(old_digits)) IS DISTINCT FROM old_digits THEN
        RETURN false;
    END IF;
    member := overlay(member PLACING convert_to((old_helpful + 1)::text, 'UTF8')
                      FROM digits_at FOR length(old_digits) - 1);
    -- Back in (007), before the member that follows it after the vote: one
    -- does, the one it moved past if no other.
    SELECT b.id INTO next_id FROM answers b
    WHERE b.question_id = qid AND NOT b.reported AND b.id <> aid
      AND (b.helpful < old_helpful + 1 OR (b.helpful = old_helpful + 1 AND b.id < aid))
    ORDER BY b.helpful DESC, b.id DESC
    LIMIT 1;
    IF next_id IS NULL THEN
        RETURN false;
    END IF;
    upto := position(convert_to('"' || next_id || '":{"id":' || next_id || ',', 'UTF8') IN doc);
    IF upto = 0 OR get_byte(doc, upto - 2) NOT IN (44, 123) THEN  -- after a "," or the "{"
        RETURN false;
    END IF;
    UPDATE question_documents
    SET element = overlay(doc PLACING member || '\x2c'::bytea FROM upto FOR 0)  -- member ","
    WHERE question_id = qid;
    RETURN true;
END
$$;
