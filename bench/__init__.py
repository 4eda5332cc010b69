"""plughost benchmarks: ``python -m bench [NAME ...]`` from the repository root."""
