"""Models: a name bound to an architecture and its config; versions hang off it."""
