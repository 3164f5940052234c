"""
FAAL's class weights as the KL budget tau grows
===============================================

FAAL (supp. Eq. 1-2) weighs the classes by the worst case, within ``KL(u || w) <= tau`` of the
uniform distribution ``u``, of their losses. :func:`theory.dro.solve_kl_dro` solves it exactly.
``tau = 0`` is uniform (plain adversarial training); as ``tau`` grows the weight moves to the
classes with the largest loss, and the DRO value (the weighted loss) rises from the mean towards the
largest loss.
"""

import matplotlib.pyplot as plt
import numpy as np

from theory.dro import dro_value, solve_kl_dro

# softmax CW margins of ten classes (higher = worse), as a batch of a robust model might give
classes = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Boot"]  # fmt: skip
margins = np.array([-0.55, -0.85, -0.30, -0.60, -0.35, -0.80, -0.10, -0.75, -0.82, -0.78])

taus = np.linspace(0.0, 1.5, 61)
weights = np.array([solve_kl_dro(margins, t) for t in taus])
values = np.array([dro_value(margins, t) for t in taus])

# every solution is on the simplex and meets the constraint KL(u || w) <= tau
u = np.full(len(margins), 1 / len(margins))
kl = np.sum(u * np.log(u / weights), axis=1)
assert np.allclose(weights.sum(axis=1), 1.0) and np.all(kl <= taus + 1e-9)

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
order = np.argsort(-margins)
for c in order:
    ax1.plot(taus, weights[:, c], label=f"{classes[c]} ({margins[c]:+.2f})")
ax1.set(xlabel="tau", ylabel="class weight w*_c", title="worst-case class weights")
ax1.legend(fontsize=7, ncol=2)
ax2.plot(taus, values, color="k", label="DRO value sum_c w*_c l_c")
ax2.axhline(margins.mean(), ls="--", color="gray", label="mean loss (tau = 0)")
ax2.axhline(margins.max(), ls=":", color="gray", label="largest loss")
ax2.set(xlabel="tau", ylabel="weighted loss", title="the DRO value")
ax2.legend(fontsize=8)
plt.show()

# %%
# The weights at FAAL's default budget, tau = 0.5
w = solve_kl_dro(margins, 0.5)
for c in order:
    ratio = w[c] * len(w)
    print(f"{classes[c]:>8}: margin {margins[c]:+.2f}  weight {w[c]:.3f}  ({ratio:.2f} x uniform)")
