"""Lapse policy service: the single decision point, reading policy as code."""
