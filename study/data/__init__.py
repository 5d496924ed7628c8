"""DRR data sets: ``study generate`` (Ray Data into Parquet shards) and ``study preview``.

See docs/architecture.md for how the parts fit.
"""
