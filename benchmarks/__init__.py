"""Benchmarks: `./run bench` (or `python -m benchmarks [name ...]`) prints each ratio against a baseline measured in the same run."""
