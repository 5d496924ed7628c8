"""The method as plain PyTorch/NumPy: geometry, anatomy, phantoms, DRRs, data sets.

Nothing in this package imports Ray or MLflow; ``study`` wires it into them.
"""
