"""bonedb's library: everything that does work. The `cli` package only parses and prints."""

__version__ = "0.1.0"
