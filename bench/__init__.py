"""drlbench: a benchmark suite for unsupervised disentangled representation learning."""

__version__ = "0.1.0"
