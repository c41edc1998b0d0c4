"""What an operator sees: Prometheus metrics, the JSON access log and per-version serving
statistics.
"""
