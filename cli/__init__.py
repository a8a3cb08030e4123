"""The ``campaign-engine`` command line."""
