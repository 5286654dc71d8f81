"""recipes benchmarks (see benchmarks/README.md)."""
