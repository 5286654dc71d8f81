"""throughput benchmarks (see benchmarks/README.md)."""
