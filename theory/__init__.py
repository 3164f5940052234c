"""Closed forms of robust fairness: FRL Gaussian-mixture theory and the FAAL KL-DRO weights."""
