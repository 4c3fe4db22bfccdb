"""Database plumbing: engine, declarative base, migrations."""
