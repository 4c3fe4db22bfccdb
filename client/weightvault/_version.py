"""The client's version, sent as its User-Agent; the distribution's metadata says the same."""

__version__ = "0.2.0"
