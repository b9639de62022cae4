"""The `lapse` command line."""
