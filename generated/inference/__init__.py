"""Stubs generated from proto/inference by scripts/generate_stubs.py; do not edit."""
