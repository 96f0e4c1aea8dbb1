"""The installed vaezoo's version, apart from everything else so that any layer may read it."""
__version__ = "0.1.0"
