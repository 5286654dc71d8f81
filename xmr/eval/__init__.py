"""xmr.eval."""
