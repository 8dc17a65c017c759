"""dhanalysis: train, analyse and plot the head variants of Double-Head R-CNN (Wu et al., CVPR 2020)."""

__version__ = "0.1.0"
