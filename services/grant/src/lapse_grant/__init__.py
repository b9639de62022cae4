"""Lapse grant service: turns approvals into real access and makes sure it ends."""
