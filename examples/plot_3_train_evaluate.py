"""
Train a model and evaluate it class-wise from Python
====================================================

``python -m deep.train`` is also a function: :func:`deep.train.main` takes the command line as a
list. This example trains FAAL-AT on scikit-learn's bundled 8x8 digits for a few epochs, loads the
checkpoint chosen on the validation split, and evaluates it class-wise with
:func:`deep.evaluate.evaluate_model`, which returns the same dictionary as ``final.json``'s
``results``: per-class accuracy, its average over classes and the worst class.
"""

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from deep.checkpoint import model_from_checkpoint
from deep.data import load_dataset
from deep.evaluate import evaluate_model
from deep.train import main as train

run = Path(tempfile.mkdtemp()) / "digits-faal-at"
status = train(["--dataset", "digits", "--method", "faal-at", "--epochs", "4", "--seed", "0",
                "--final-attacks", "clean", "--out", str(run), "--quiet"])  # fmt: skip
assert status == 0

# %%
# Evaluate the validation-chosen checkpoint on the test set
# ----------------------------------------------------------
dataset = load_dataset("digits")
model, _ = model_from_checkpoint(run / "best.pt")
results = evaluate_model(
    model, dataset.test, num_classes=dataset.num_classes, attacks=("clean", "pgd20", "cw20"),
    eps=dataset.eps, step_size=dataset.step_size, seed=0,
)  # fmt: skip

for key, res in results.items():
    print(f"{key:>6}: average {100 * res['average']:.1f} %, worst class {100 * res['worst']:.1f} %")

# %%
# Class-wise accuracy under each attack
# -------------------------------------
fig, ax = plt.subplots(figsize=(8, 3.5), constrained_layout=True)
width = 0.27
index = np.arange(dataset.num_classes)
for k, (key, res) in enumerate(results.items()):
    ax.bar(index + (k - 1) * width, np.array(res["per_class"]) * 100, width, label=key)
ax.set(xticks=index, xticklabels=dataset.classes, xlabel="class", ylabel="accuracy (%)",
       title=f"FAAL-AT, 4 epochs on digits (eps {dataset.eps})")  # fmt: skip
ax.legend(loc="lower right")
plt.show()
