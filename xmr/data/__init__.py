"""xmr.data."""
