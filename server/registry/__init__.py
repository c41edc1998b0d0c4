"""The model registry: versions on disk, the in-memory store that serves them, and traffic
routing; no transport is imported here.
"""
