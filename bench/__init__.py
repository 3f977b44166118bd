"""Benchmarks: each prints a table (medians, ratios measured side by side in one run), writes a JSON
file of results under bench/results/, and is summarised in docs/performance.md."""
