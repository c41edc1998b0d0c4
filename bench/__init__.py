"""regserve's benchmarks: ``python -m bench`` (``make bench``) prints the tables."""
