"""Python runner workers, one module per runtime (`python -m harness_runners.<name>`: this folder installs as harness_runners), sharing harness_runners.protocol."""
