"""xmr.negatives."""
