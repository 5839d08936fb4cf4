"""The product catalogue export's files and their columns, as its headers name
them: the generator writes these headers and the loader expects them."""

HEADERS: dict[str, tuple[str, ...]] = {
    "product.csv": ("id", "name", "slogan", "description", "category", "default_price"),
    "features.csv": ("id", "product_id", "feature", "value"),
    "styles.csv": ("id", "productId", "name", "sale_price", "original_price", "default_style"),
    "photos.csv": ("id", "styleId", "url", "thumbnail_url"),
    "skus.csv": ("id", "styleId", "size", "quantity"),
    "related.csv": ("id", "current_product_id", "related_product_id"),
    "cart.csv": ("id", "user_session", "product_id", "active"),
}
