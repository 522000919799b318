"""Python runner workers, one module per runtime (`python -m runners.<name>`), sharing runners.protocol."""
