"""xmr.models."""
