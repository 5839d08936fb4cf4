-- The transactional outbox of cache invalidations (services/common/outbox.py).
-- Every write statement inserts the cache scopes it changes here, in the same
-- statement (so the same transaction): a committed write always has its row.
-- The writer deletes the row once its own invalidation reached Redis; rows a
-- dead or cut-off writer left behind are invalidated and deleted by the relay
-- of any process. The table stays near empty: rows live for about a second.
CREATE TABLE cache_outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    scopes      text[]      NOT NULL,
    written_at  timestamptz NOT NULL DEFAULT now()
);
