"""Overview service: products, styles, related products, carts and interactions."""
