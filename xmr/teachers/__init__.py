"""xmr.teachers."""
