"""Scripts that regenerate the figures and tables of the FRL and FAAL papers."""
