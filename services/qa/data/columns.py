"""The Questions & Answers export's files and their columns, as its headers
name them: the generator writes these headers and the loader expects them."""

HEADERS: dict[str, tuple[str, ...]] = {
    "questions.csv": (
        "id",
        "product_id",
        "body",
        "date_written",
        "asker_name",
        "asker_email",
        "reported",
        "helpful",
    ),
    "answers.csv": (
        "id",
        "question_id",
        "body",
        "date_written",
        "answerer_name",
        "answerer_email",
        "reported",
        "helpful",
    ),
    "answers_photos.csv": ("id", "answer_id", "url"),
}
