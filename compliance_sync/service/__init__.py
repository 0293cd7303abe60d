"""The service layer: one fiscal year's run over the backend port, its outcome, and how it is shown."""
