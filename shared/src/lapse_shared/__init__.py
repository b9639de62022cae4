"""Lapse shared library: what every Lapse service needs and nothing domain-specific of one."""
