"""Ratings & Reviews service."""
