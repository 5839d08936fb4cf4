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
--
-- One statement reads the element and the answers that follow this one in
-- the list's order before and after the vote (two index probes of
-- answers_question_helpful_idx). The vote moves the answer iff they differ:
-- any answer it passes sits between the two positions, and the nearest one
-- follows it after the vote. A statement costs more to start than these do
-- to run (0041, 0046), so the in-place patch has three, as 006 had four.
CREATE OR REPLACE FUNCTION qa_patch_answer_helpful(qid integer, aid integer, old_helpful integer)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    key constant bytea := convert_to(',"helpfulness":', 'UTF8');
    old_digits constant bytea := convert_to(old_helpful::text || ',', 'UTF8');
    new_digits constant bytea := convert_to((old_helpful + 1)::text, 'UTF8');
    head constant bytea := convert_to('"' || aid || '":{"id":' || aid || ',', 'UTF8');
    doc bytea;
    member bytea;
    member_at integer;  -- the member's first byte
    upto integer;       -- the byte after it: the next member's first, or the "}}"
    next_before integer;  -- the answer after it in the list, before the vote
    next_after integer;   -- and after the vote
    digits_at integer;
    n integer;
BEGIN
    PERFORM pg_advisory_xact_lock(29025, qid);
    -- A new snapshot: every vote and answer committed before the lock.
    SELECT d.element,
           (SELECT b.id FROM answers b
            WHERE b.question_id = qid AND NOT b.reported AND b.id <> aid
              AND (b.helpful < old_helpful OR (b.helpful = old_helpful AND b.id < aid))
            ORDER BY b.helpful DESC, b.id DESC LIMIT 1),
           (SELECT b.id FROM answers b
            WHERE b.question_id = qid AND NOT b.reported AND b.id <> aid
              AND (b.helpful < old_helpful + 1 OR (b.helpful = old_helpful + 1 AND b.id < aid))
            ORDER BY b.helpful DESC, b.id DESC LIMIT 1)
    INTO doc, next_before, next_after
    FROM question_documents d WHERE d.question_id = qid;
    IF doc IS NULL THEN
        RETURN false;
    END IF;
    member_at := position(head IN doc);
    IF member_at = 0 THEN
        RETURN false;
    END IF;
    IF next_after IS NOT DISTINCT FROM next_before THEN
        -- It keeps its place: the digits in place (006).
        digits_at := member_at - 1 + position(key IN substring(doc FROM member_at));
        IF digits_at < member_at THEN
            RETURN false;
        END IF;
        digits_at := digits_at + length(key);
        IF substring(doc FROM digits_at FOR length(old_digits)) IS DISTINCT FROM old_digits THEN
            RETURN false;
        END IF;
        UPDATE question_documents
        SET element = overlay(doc PLACING new_digits FROM digits_at FOR length(old_digits) - 1)
        WHERE question_id = qid;
        RETURN true;
    END IF;

    -- It moves ahead. Cut the member out (010): it ends where the next one
    -- in the element's order starts, or at the "}}".
    n := length(doc);
    IF next_before IS NOT NULL THEN
        upto := position(convert_to('"' || next_before || '":{"id":' || next_before || ',', 'UTF8')
                         IN doc);
        IF upto <= member_at OR get_byte(doc, upto - 2) <> 44 THEN  -- after it, after a ","
            RETURN false;
        END IF;
        member := substring(doc FROM member_at FOR upto - 1 - member_at);
        doc := overlay(doc PLACING ''::bytea FROM member_at FOR upto - member_at);  -- member ","
    ELSE
        -- The last member, after a "," (it moves past one, so it is not the only one).
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
    member := overlay(member PLACING new_digits FROM digits_at FOR length(old_digits) - 1);
    -- Back in (007), before the member that follows it after the vote.
    upto := position(convert_to('"' || next_after || '":{"id":' || next_after || ',', 'UTF8')
                     IN doc);
    IF upto = 0 OR get_byte(doc, upto - 2) NOT IN (44, 123) THEN  -- after a "," or the "{"
        RETURN false;
    END IF;
    UPDATE question_documents
    SET element = overlay(doc PLACING member || '\x2c'::bytea FROM upto FOR 0)  -- member ","
    WHERE question_id = qid;
    RETURN true;
END
$$;
