"""The writes bench.write_ab runs: each one's wrk Lua script, the order of the
runs, and the rows each run's requests name (made first when a run goes
alone). Docs: bench/write_ab.py."""

from __future__ import annotations


def _post_review_lua(photos: str) -> str:
    """POST /reviews for a random product of 1..1000 with `photos` (JSON)."""
    return f"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local p = math.random(1, 1000)
  local body = '{{"product_id":' .. p .. ',"rating":4,"summary":"s",'
    .. '"body":"Benchmark write: this text is long enough for the fifty character minimum rule.",'
    .. '"recommend":true,"name":"wab","email":"wab@example.com",'
    .. '"photos":{photos},"characteristics":{{}}}}'
  return wrk.format("POST", "/reviews", nil, body)
end
"""


def _post_answer_lua(photos: str) -> str:
    """POST an answer with `photos` (JSON) to a random question of 1..SPREAD."""
    return f"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local q = math.random(1, SPREAD)
  local body = '{{"body":"write_ab answer body","name":"wab",'
    .. '"email":"wab@example.com","photos":{photos}}}'
  return wrk.format("POST", "/qa/questions/" .. q .. "/answers", nil, body)
end
"""


def _one_id_lua(method: str, upper: str, path: str) -> str:
    """A bodiless request whose `path` (a Lua expression) names a random `id`
    of 1..`upper`."""
    return f"""
request = function()
  local id = math.random(1, {upper})
  return wrk.format("{method}", {path}, nil, nil)
end
"""


LUA = {
    "post_question": """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local p = math.random(1, 1000)
  local body = '{"body":"write_ab question body","name":"wab",'
    .. '"email":"wab@example.com","product_id":' .. p .. '}'
  return wrk.format("POST", "/qa/questions", nil, body)
end
""",
    "post_review": _post_review_lua("[]"),
    # With two photos: the photos' elements go into the review's row in the
    # same statement (decision 0049).
    "post_review_photos": _post_review_lua(
        '["https://img.example/a.jpg","https://img.example/b.jpg"]'
    ),
    "post_answer": _post_answer_lua("[]"),
    # With two photos: the photos' elements go into the answer's row in the
    # same statement (decision 0050).
    "post_answer_photos": _post_answer_lua(
        '["https://img.example/a.jpg","https://img.example/b.jpg"]'
    ),
    "put_review_helpful": _one_id_lua("PUT", "1000", '"/reviews/" .. id .. "/helpful"'),
    "put_answer_helpful": _one_id_lua("PUT", "SPREAD", '"/qa/answers/" .. id .. "/helpful"'),
    "get_questions": _one_id_lua("GET", "1000", '"/qa/questions?product_id=" .. id'),
    "put_question_helpful": _one_id_lua("PUT", "1000", '"/qa/questions/" .. id .. "/helpful"'),
}
# A report hides its row once: a second report of it writes nothing (reviews
# answer it 404), so each report run walks unreported ids upward from the
# first one, given as the script's argument (`wrk ... -- FIRST`; one thread,
# so no id is sent twice).
for _name, _path in (
    ("put_review_report", "/reviews/"),
    ("put_question_report", "/qa/questions/"),
    ("put_answer_report", "/qa/answers/"),
):
    LUA[_name] = f"""
local next_id
init = function(args) next_id = tonumber(args[1]) end
request = function()
  local id = next_id
  next_id = next_id + 1
  return wrk.format("PUT", "{_path}" .. id .. "/report", nil, nil)
end
"""
# Each report run's table and the POST run that tops it up with unreported rows.
REPORTED = {
    "put_review_report": ("reviews", "post_review"),
    "put_question_report": ("questions", "post_question"),
    "put_answer_report": ("answers", "post_answer"),
}
# The rows a run's requests name, as (table, how many, the POST run that
# makes them; "spread": --spread). Answers go to questions 1..--spread, the
# answer vote to answers 1..--spread, the other helpful PUTs to ids 1..1000:
# made first, unmeasured, when --runs leaves out the POST that would have made
# them (each tree's ids start at 1).
NEEDS = {
    "post_answer": ("questions", "spread", "post_question"),
    "post_answer_photos": ("questions", "spread", "post_question"),
    "put_question_helpful": ("questions", 1000, "post_question"),
    "put_answer_helpful": ("answers", "spread", "post_answer"),
    "put_review_helpful": ("reviews", 1000, "post_review"),
}


def needed_rows(run: str, spread: int) -> list[tuple[str, int, str]]:
    """(table, rows, POST run) to make before `run`, in order: a POST's own
    needs first (the answer vote needs answers, whose POST needs questions)."""
    if run not in NEEDS:
        return []
    table, rows, post = NEEDS[run]
    return [*needed_rows(post, spread), (table, spread if rows == "spread" else rows, post)]


RUNS = [
    ("qa", "post_question"),
    ("reviews", "post_review"),
    ("reviews", "post_review_photos"),
    ("qa", "put_question_helpful"),
    # Each after the POST that makes its ids 1..1000 (questions, then answers;
    # reviews); run alone, make_rows makes them first (a PUT on a missing id is
    # a 404 and stops the run).
    ("qa", "post_answer"),
    ("qa", "post_answer_photos"),
    ("reviews", "put_review_helpful"),
    ("qa", "put_answer_helpful"),
    # Cached reads under load: the lease (every 50 ms, through the beacon)
    # must hold there as it did (a lapse drops the local tier).
    ("qa", "get_questions"),
    # Last: they hide rows from 1 up, which the helpful PUTs above vote on (a
    # hidden question or answer has no read-model element to patch) and the
    # reads above list.
    ("reviews", "put_review_report"),
    ("qa", "put_question_report"),
    ("qa", "put_answer_report"),
]
