"""The README stays a five-minute page that points into the documentation site, and the site's
guide pages are all reachable (the site itself is built with warnings as errors by .ci/run)."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
LINK = re.compile(r"\]\(([^)\s]+)\)")
TOCTREE = re.compile(r"```\{toctree\}\n(.*?)```", re.S)


def github_slug(heading: str) -> str:
    """The anchor GitHub (and MyST's heading anchors) give a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def headings(path: Path) -> set[str]:
    text, fence = [], False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and re.match(r"#{1,6} ", line):
            text.append(github_slug(line.lstrip("#")))
    return set(text)


def test_readme_is_short_and_keeps_the_set_up_commands():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    for needed in (
        "python -m sim.gaussian_demo",
        "python -m pytest -q",
        "python -m sphinx -W --keep-going -b html docs docs/_build/html",
        "<!-- fairness-benchmark:start -->",
        "<!-- fairness-benchmark:end -->",
    ):
        assert needed in readme, needed
    assert readme.count("<!-- quickstart-output: ") == 2


def test_readme_links_point_to_files_and_headings_that_exist():
    readme = REPO / "README.md"
    bad = []
    for target in LINK.findall(readme.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        file = (readme.parent / path) if path else readme
        if not file.exists():
            bad.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in headings(file):
            bad.append(f"{target}: no heading with that anchor")
    assert not bad, bad


def test_every_guide_page_is_in_a_toctree():
    listed = set()
    for page in DOCS.rglob("*.md"):
        if "_build" in page.parts or "results" in page.relative_to(DOCS).parts[:1]:
            continue
        for block in TOCTREE.findall(page.read_text()):
            for entry in block.splitlines():
                entry = entry.strip()
                if entry and not entry.startswith(":"):
                    listed.add((page.parent / entry).with_suffix(".md").resolve())
    pages = {p.resolve() for p in (DOCS / "guide").rglob("*.md")}
    missing = sorted(str(p.relative_to(DOCS)) for p in pages - listed)
    assert not missing, f"guide pages in no toctree: {missing}"


def test_github_slug_matches_githubs_anchors():
    assert github_slug(" Evaluating from Python") == "evaluating-from-python"
    assert github_slug(" Training (`python -m deep.train`)") == "training-python--m-deeptrain"


def test_site_check_names_missing_entries_and_figures(tmp_path):
    from tests import docs_site

    site, examples = tmp_path / "html", tmp_path / "examples"
    (site / "api").mkdir(parents=True)
    (site / "auto_examples" / "images").mkdir(parents=True)
    examples.mkdir()
    (examples / "plot_a.py").write_text("")
    (examples / "plot_b.py").write_text("")
    for page, entry in docs_site.API_ENTRIES:
        path = site / page
        path.write_text((path.read_text() if path.exists() else "") + f'<dt id="{entry}">')
    (site / "auto_examples" / "plot_a.html").write_text(
        '<img src="../_images/sphx_glr_plot_a_001.png">'
    )
    (site / "auto_examples" / "images" / "sphx_glr_plot_a_001.png").write_bytes(b"png")
    (site / "auto_examples" / "plot_b.html").write_text("<p>no figure</p>")
    (site / "guide").mkdir()
    (site / "_static" / "mathjax").mkdir(parents=True)
    (site / "_static" / "mathjax" / "tex-chtml.js").write_text("")
    math = '<span class="math notranslate nohighlight">\\(x\\)</span>'
    local = '<script defer="defer" src="../_static/mathjax/tex-chtml.js"></script>'
    (site / docs_site.MATH_PAGE).write_text(local + math)
    assert docs_site.problems(site, examples) == [
        "gallery: plot_b.html shows no figure of plot_b.py"
    ]
    # math needs a MathJax that is a file of the site: a CDN, none, or a missing file is named
    cdn = '<script defer="defer" src="https://cdn.jsdelivr.net/npm/mathjax@4/tex-mml-chtml.js">'
    (site / docs_site.MATH_PAGE).write_text(cdn + math)
    (site / "api" / "deep.evaluate.html").write_text(
        (site / "api" / "deep.evaluate.html").read_text() + math
    )
    (site / "index.html").write_text('<script src="_static/mathjax/tex-svg.js"></script>' + math)
    assert docs_site.mathjax_problems(site) == [
        "api/deep.evaluate.html: math but no MathJax script",
        f"{docs_site.MATH_PAGE}: MathJax from {cdn.split('src=')[1][1:-2]}, not from the site",
        "index.html: MathJax script _static/mathjax/tex-svg.js was not written",
    ]
    (site / docs_site.MATH_PAGE).write_text("<p>no formulas</p>")
    assert f"{docs_site.MATH_PAGE}: no math" in docs_site.mathjax_problems(site)
    (site / docs_site.MATH_PAGE).write_text(local + math)
    (site / "api" / "theory.dro.html").write_text("")
    assert "api/theory.dro.html: no entry theory.dro.solve_kl_dro" in docs_site.problems(
        site, examples
    )
