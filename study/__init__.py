"""The study platform's glue: Ray Data, Ray Train, Ray Tune and MLflow around ``components``.

Arranged by role, in the order of a study: ``data`` (DRR data sets), ``training``, ``sweeps``,
``evaluation`` (Table 1, predictions), beside the command line (``cli``), the config schema
(``config``), the console and the shared helpers. docs/architecture.md has the map.
"""
