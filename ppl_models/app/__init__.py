"""The top floor: the command line and the comparison suites. It imports `inference`; nothing
in the library imports it."""
