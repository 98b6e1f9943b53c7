"""bonedb's command line (`boneclf.cli` once installed): parses options, calls `boneclf`, prints.

No command here runs a query or computes a metric: each turns its options into one library call
and its result into a table, JSON or a progress bar, through `output`.
"""
