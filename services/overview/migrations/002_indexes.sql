-- Secondary indexes. The loader drops and rebuilds exactly these around a
-- bulk load, so every one must be named and created IF NOT EXISTS.

-- GET /products pages: a range of seq.
CREATE UNIQUE INDEX IF NOT EXISTS products_seq_idx ON products (seq);
-- Features in feature id order.
CREATE INDEX IF NOT EXISTS features_product_idx ON features (product_id, id);
-- Styles in style id order.
CREATE INDEX IF NOT EXISTS styles_product_idx ON styles (product_id, id);
CREATE INDEX IF NOT EXISTS photos_style_idx ON photos (style_id, id);
-- Covering: a style's skus come from the index alone (COPY FREEZE leaves the
-- pages all-visible, so index-only scans work right after a load).
CREATE INDEX IF NOT EXISTS skus_style_idx ON skus (style_id, id) INCLUDE (size, quantity);
-- Related ids in export row order, index-only.
CREATE INDEX IF NOT EXISTS related_current_idx
    ON related (current_product_id, id) INCLUDE (related_product_id);
