"""Deep robust fairness: datasets, models, attacks, class-wise evaluation and FAAL/FRL training."""
