"""
Class-wise errors of natural vs robust classifiers
==================================================

FRL's Gaussian mixture (FRL Eq. 2) has two classes, ``-1`` with standard deviation sigma and
the harder ``+1`` with ``K`` times as much. The optimal natural and robust linear classifiers
differ only in their intercept (FRL Eq. 5, Theorem 2), so their class-wise errors are closed forms
(:mod:`theory.gaussian`). Robust training lowers the easy class's standard error and raises the hard
class's (FRL Corollary 1): the gap grows with the budget eps and with K.
"""

import matplotlib.pyplot as plt
import numpy as np

from theory.gaussian import Mixture, theorem1_errors, theorem2_errors

d, eta, sigma = 10, 0.5, 1.0

# %%
# The robust classifier's class errors as the budget grows
# --------------------------------------------------------
# At eps = 0 the robust classifier is the natural one. The closed forms of ``Mixture`` agree with
# the paper's Theorem 2 as printed.
K = 2.0
m = Mixture(d=d, eta=eta, sigma=sigma, K=K)
eps = np.linspace(0.0, 0.4, 81)
b_rob = m.robust_intercept(eps)
err_minus, err_plus = m.standard_errors(b_rob)
paper_minus, paper_plus = theorem2_errors(d, eta, sigma, K, eps[1:])
assert np.allclose(err_minus[1:], paper_minus) and np.allclose(err_plus[1:], paper_plus)

# %%
# Natural vs robust as the variance ratio K grows
# -----------------------------------------------
Ks = np.linspace(1.0, 4.0, 61)
grid = Mixture(d=d, eta=eta, sigma=sigma, K=Ks)
nat = grid.standard_errors(grid.natural_intercept())
rob = grid.standard_errors(grid.robust_intercept(0.2))
n1, n2 = theorem1_errors(d, eta, sigma, Ks[1:])  # Theorem 1 as printed (K > 1)
assert np.allclose(nat[0][1:], n1) and np.allclose(nat[1][1:], n2)

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
ax1.plot(eps, err_minus, label="class -1 (easy)", color="tab:orange")
ax1.plot(eps, err_plus, label="class +1 (hard)", color="tab:blue")
ax1.set(xlabel="budget eps", ylabel="standard error", title=f"robust classifier, K = {K:g}")
ax1.legend()
ax2.plot(Ks, nat[0], "--", color="tab:orange", label="-1, natural")
ax2.plot(Ks, nat[1], "--", color="tab:blue", label="+1, natural")
ax2.plot(Ks, rob[0], color="tab:orange", label="-1, robust (eps 0.2)")
ax2.plot(Ks, rob[1], color="tab:blue", label="+1, robust (eps 0.2)")
ax2.set(xlabel="K (std ratio of class +1)", ylabel="standard error", title="natural vs robust")
ax2.legend(fontsize=8)
plt.show()

# %%
# The gap between the classes, natural vs robust
print(f"K = {K:g}: standard-error gap (+1 minus -1)")
for e in (0.0, 0.2, 0.4):
    lo, hi = m.standard_errors(m.robust_intercept(e))
    print(f"  eps {e:.1f}: class -1 {lo:.4f}, class +1 {hi:.4f}, gap {hi - lo:.4f}")
