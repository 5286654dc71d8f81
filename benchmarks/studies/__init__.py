"""studies benchmarks (see benchmarks/README.md)."""
