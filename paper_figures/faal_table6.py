"""FAAL supplement Table 6 (see :mod:`paper_figures.faal_tables` for rows, settings, commands)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from paper_figures import faal_tables
from paper_figures.runs import main_with_errors

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m paper_figures.faal_table6 [options]``: Table 6's rows, PNG + CSV + Markdown."""
    return faal_tables.main(argv, table=6)


if __name__ == "__main__":
    sys.exit(main_with_errors(main))
