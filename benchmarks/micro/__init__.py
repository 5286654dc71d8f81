"""micro benchmarks (see benchmarks/README.md)."""
