"""harness: cross-language conformance and benchmark harness for TensorFlow models."""

__version__ = "0.1.0"
