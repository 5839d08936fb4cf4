-- Secondary indexes. The loader drops and rebuilds exactly these around a
-- bulk load, so every one must be named and created IF NOT EXISTS.

-- GET /qa/questions: a product's visible questions, helpful DESC, id DESC.
CREATE INDEX IF NOT EXISTS questions_product_helpful_idx
    ON questions (product_id, helpful DESC, id DESC) WHERE NOT reported;
-- Both the answers page and the answers embedded in each question.
CREATE INDEX IF NOT EXISTS answers_question_helpful_idx
    ON answers (question_id, helpful DESC, id DESC) WHERE NOT reported;
CREATE INDEX IF NOT EXISTS answers_photos_answer_idx ON answers_photos (answer_id, id);
