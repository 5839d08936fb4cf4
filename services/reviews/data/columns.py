"""The Ratings & Reviews export's files and their columns, as its headers name
them: the generator writes these headers and the loader expects them."""

HEADERS: dict[str, tuple[str, ...]] = {
    "reviews.csv": (
        "id",
        "product_id",
        "rating",
        "date",
        "summary",
        "body",
        "recommend",
        "reported",
        "reviewer_name",
        "reviewer_email",
        "response",
        "helpfulness",
    ),
    "reviews_photos.csv": ("id", "review_id", "url"),
    "characteristics.csv": ("id", "product_id", "name"),
    "characteristic_reviews.csv": ("id", "characteristic_id", "review_id", "value"),
}
