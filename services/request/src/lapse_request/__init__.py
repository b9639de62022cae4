"""Lapse request service: accepts access requests and follows them to their end."""
