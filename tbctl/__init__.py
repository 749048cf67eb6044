"""tbctl: start, find, forward and stop TensorBoard locally and over SSH."""

__version__ = "0.1.0"
