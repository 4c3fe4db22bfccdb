"""Content-addressed blob store on the local filesystem."""
