"""The proxy's own version, shown by the log view; a module of its own so that no part needs the package."""

__version__ = "0.1.0"
