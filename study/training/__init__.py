"""Training one strategy: the loop (``loop``), where it runs (``workers``), its folder and result
(``run_folder``), what it reports (``callbacks``), and the driver of ``study train`` (``driver``).

See docs/architecture.md for how the parts fit.
"""
