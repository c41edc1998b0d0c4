"""Stubs generated from proto/grpc/reflection/v1 by scripts/generate_stubs.py; do not edit."""
