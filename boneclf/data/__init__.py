"""Datasets: reading sources (MURA, class folders), ingest, hashing, splits, leakage, audit, export, stats, synth.

`data` imports `store` (and the shared modules at the top of `boneclf`), never `ml`.
"""
