"""Simulations on the FRL Gaussian mixture: the theory checked by training, and mitigations."""
