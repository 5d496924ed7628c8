"""Evaluation: where a model comes from (``models``), measuring it on the test splits (``measure``),
``study evaluate``, ``study reproduce`` with the paper's Table 1 (``table``), ``study predict``, and
the plots.

See docs/architecture.md for how the parts fit.
"""
