"""The `weightvault` command."""
