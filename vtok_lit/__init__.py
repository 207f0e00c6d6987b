"""vtok-lit: a PyTorch Lightning experiment kit for VTok video tokenization."""

__version__ = "0.1.0"
