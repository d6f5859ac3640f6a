"""Benchmarks of hybridserver: ``bench/run`` (see BENCHMARKS.md). Not part of the package."""
