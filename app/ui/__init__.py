"""The browser UI: one HTML shell and static assets; every datum comes from the public JSON API."""
