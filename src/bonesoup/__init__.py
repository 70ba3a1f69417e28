"""Bone Soups: serve any trade-off between objectives by merging a few backbone models.

The pipeline is objectives -> backbone matrix -> seek (train backbones) -> soup (solve for
coefficients and merge) -> evaluate (grid, front, metrics) -> report and serve.
"""

__version__ = "0.1.0"
