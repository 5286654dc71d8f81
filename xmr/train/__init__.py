"""xmr.train."""
