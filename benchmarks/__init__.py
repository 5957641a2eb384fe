"""Benchmarks: each prints ratios against a plain baseline, interleaved in one run, median of repeats."""
