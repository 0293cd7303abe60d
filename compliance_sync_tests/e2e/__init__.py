"""End to end: the command line and Dagster (in-process, the webserver and daemon, the dg command line), the browser,
the mutation run."""
