"""Checks and clean-ups of the stored files against the database: fsck and gc."""
