"""rlaif: turn a written constitution into training signal."""

__version__ = "0.1.0"
