"""The domain: SPEC §4's rules and the values they work on. Pure: no configuration, I/O or Dagster."""
