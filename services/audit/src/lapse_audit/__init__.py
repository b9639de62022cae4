"""Lapse audit service: every event, once, in a hash chain that shows any later edit."""
