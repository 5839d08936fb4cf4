-- Ready-to-send answers per product: the bytes GET /products/:id, /styles and
-- /related return, built by the loader from the tables above with the same
-- shaping code as the live queries (queries.py). The catalogue changes only
-- with a bulk load, which rebuilds this table in the same transaction, so a
-- cold read is one primary-key lookup instead of three aggregating joins.
-- A product without a row here (rows added by hand, or a database migrated
-- but not reloaded) is answered by the live queries.
CREATE TABLE product_documents (
    product_id  integer PRIMARY KEY,
    detail      bytea NOT NULL,
    styles      bytea NOT NULL,
    related     bytea NOT NULL
);
