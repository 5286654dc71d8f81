"""xmr.objectives."""
