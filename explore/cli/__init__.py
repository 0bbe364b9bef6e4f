"""The command line (`python -m explore ...`): one module per command group."""
