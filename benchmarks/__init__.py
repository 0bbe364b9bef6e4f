"""Benchmarks and soak tests, outside the importable library (`python -m explore bench`)."""
