"""The benchmarks: `python -m bench.<script>` from the repository root (results: docs/benchmarks.md)."""
