"""Sweeps: search spaces (``space``), the plan a sweep keeps (``plan``), its Ray Tune trials
(``trials``), what is made of their results (``results``), and ``study sweep`` itself (``driver``).

See docs/architecture.md for how the parts fit.
"""
