"""MLflow: the runs (``runs``), the parameters that tell them apart (``params``), the data set's splits as
MLflow datasets (``datasets``), the logged and registered U-Nets (``models``), and links into the UI
(``links``).

See docs/architecture.md ("MLflow") for what each run holds.
"""
