"""labcheck: reproduce, test, benchmark and grade PyTorch course exercises."""
__version__ = "0.1.0"
