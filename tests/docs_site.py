"""Check the built documentation site: ``python -m tests.docs_site [docs/_build/html]`` (run by
``.ci/run`` after the Sphinx build).

The API reference must hold entries for the functions a reader looks for first, every gallery
example must have run and put its figure in its page, and every page with math must load MathJax
from the site itself (so formulas render offline). Exits 1 listing what is missing.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

#: ``(page, object id)`` entries the API reference must hold.
API_ENTRIES = (
    ("api/deep.evaluate.html", "deep.evaluate.evaluate_model"),
    ("api/theory.dro.html", "theory.dro.solve_kl_dro"),
    ("api/deep.certify.html", "deep.certify.certify"),
    ("api/deep.certify.html", "deep.certify.predict"),
    ("api/theory.gaussian.html", "theory.gaussian.Mixture"),
    ("api/theory.gaussian.html", "theory.gaussian.Mixture.natural_intercept"),
    ("api/theory.gaussian.html", "theory.gaussian.Mixture.robust_intercept"),
    ("api/theory.gaussian.html", "theory.gaussian.Mixture.standard_errors"),
    ("api/theory.gaussian.html", "theory.gaussian.Mixture.robust_errors"),
    ("api/theory.gaussian.html", "theory.gaussian.Mixture.boundary_errors"),
    ("api/theory.gaussian.html", "theory.gaussian.theorem1_errors"),
    ("api/theory.gaussian.html", "theory.gaussian.theorem2_errors"),
    ("api/deep.metrics.html", "deep.metrics.classwise_accuracy"),
)
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
#: A page that must hold math (so the MathJax check cannot pass on a site without formulas).
MATH_PAGE = "guide/theory.html"
_MATH = re.compile(r'class="math[ "]')
_SCRIPT_SRC = re.compile(r'<script[^>]*\ssrc="([^"]*mathjax[^"]*)"', re.IGNORECASE)


def mathjax_problems(site: Path) -> list[str]:
    """Pages of ``site`` with math whose MathJax is not a file of the site (a CDN needs a network).

    Args:
        site: the built HTML folder.

    Returns:
        One line per problem (empty when every page with math loads a MathJax of the site).
    """
    out = []
    if not (site / MATH_PAGE).is_file() or not _MATH.search((site / MATH_PAGE).read_text()):
        out.append(f"{MATH_PAGE}: no math")
    for page in sorted(site.rglob("*.html")):
        text = page.read_text(errors="replace")
        if not _MATH.search(text):
            continue
        sources = _SCRIPT_SRC.findall(text)
        name = page.relative_to(site).as_posix()
        if not sources:
            out.append(f"{name}: math but no MathJax script")
        for src in sources:
            if "//" in src:
                out.append(f"{name}: MathJax from {src}, not from the site")
            elif not (page.parent / src.split("?")[0]).is_file():
                out.append(f"{name}: MathJax script {src} was not written")
    return out


def problems(site: Path, examples: Path = EXAMPLES) -> list[str]:
    """What the built site at ``site`` lacks (empty when complete)."""
    out = []
    for page, entry in API_ENTRIES:
        path = site / page
        if not path.is_file():
            out.append(f"{page}: no such page")
        elif f'id="{entry}"' not in path.read_text():
            out.append(f"{page}: no entry {entry}")
    for script in sorted(examples.glob("plot_*.py")):
        page = site / "auto_examples" / f"{script.stem}.html"
        if not page.is_file():
            out.append(f"gallery: no page for {script.name}")
            continue
        figures = re.findall(
            rf'src="[^"]*sphx_glr_{re.escape(script.stem)}_\d+\.png"', page.read_text()
        )
        if not figures:
            out.append(f"gallery: {page.name} shows no figure of {script.name}")
        for figure in figures:
            name = figure.split("/")[-1].rstrip('"')
            if not any(site.rglob(name)):
                out.append(f"gallery: {page.name} shows {name}, which was not written")
    return out + mathjax_problems(site)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    site = Path(args[0] if args else "docs/_build/html")
    found = problems(site)
    if found:
        print("the built documentation lacks:\n  " + "\n  ".join(found), file=sys.stderr)
        return 1
    print(f"{site}: API entries, gallery figures and a local MathJax present")
    return 0


if __name__ == "__main__":
    sys.exit(main())
