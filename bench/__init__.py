"""mediaedge benchmark harness: `python -m bench --help`."""
