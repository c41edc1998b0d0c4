"""Stubs generated from proto/regserve/v1 by scripts/generate_stubs.py; do not edit."""
