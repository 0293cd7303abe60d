"""Entry points: the command line and the UI launcher."""
