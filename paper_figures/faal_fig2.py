"""FAAL supplement Figure 2 (see :mod:`paper_figures.faal_figures` for what it shows)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from paper_figures import faal_figures
from paper_figures.runs import main_with_errors

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m paper_figures.faal_fig2 [options]``: writes faal_fig2.png and .csv."""
    return faal_figures.main(argv, figure="2")


if __name__ == "__main__":
    sys.exit(main_with_errors(main))
