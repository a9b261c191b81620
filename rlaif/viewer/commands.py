"""CLI commands of the viewer feature: `view`, `show`, `labels`.

Kept import-light: textual and rich load inside the handlers.
"""

from __future__ import annotations

import argparse


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add this feature's subcommands; each sets ``handler=fn(args) -> int``."""
    return None
