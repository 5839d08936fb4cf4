-- Secondary indexes. The loader drops and rebuilds exactly these around a
-- bulk load, so every one must be named and created IF NOT EXISTS.

-- sort=helpful / sort=relevant: helpfulness DESC, date DESC, id DESC.
CREATE INDEX IF NOT EXISTS reviews_product_helpful_idx
    ON reviews (product_id, helpfulness DESC, date DESC, id DESC) WHERE NOT reported;
-- sort=newest: date DESC, id DESC.
CREATE INDEX IF NOT EXISTS reviews_product_newest_idx
    ON reviews (product_id, date DESC, id DESC) WHERE NOT reported;
CREATE INDEX IF NOT EXISTS reviews_photos_review_idx ON reviews_photos (review_id, id);
CREATE INDEX IF NOT EXISTS characteristics_product_idx ON characteristics (product_id, id);
-- report subtracts a review's scores from the aggregates.
CREATE INDEX IF NOT EXISTS characteristic_reviews_review_idx ON characteristic_reviews (review_id);
