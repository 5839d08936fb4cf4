"""Mechanics shared by the three services: settings, pool, cache, metrics, errors, validation."""
