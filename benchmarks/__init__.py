"""Benchmark scripts: `python -m benchmarks.<name>`; each prints its figures and writes docs/."""
