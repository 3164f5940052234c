"""Scripts that regenerate the figures and tables of the FRL and FAAL papers.

``python -m paper_figures list`` names them; ``python -m paper_figures all --quick`` runs them all
on digits in minutes. Each script writes a PNG and a CSV (tables also Markdown) and reads only the
package's own outputs: ``theory`` functions, ``sim.gaussian_demo``'s ``results.json``, and the
``final.json`` / ``metrics.jsonl`` / ``class_weights.csv`` of ``deep.train`` runs, which
:mod:`paper_figures.runs` trains once into a cache folder and reuses.
"""
