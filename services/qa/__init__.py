"""Questions & Answers service."""
