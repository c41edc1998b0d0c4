"""What an operator sees: Prometheus metrics (``metrics``), the JSON access log
(``access_log``) and per-version serving statistics (``serving_stats``); ``batching``
holds the background worker that takes their work off the request path.
"""
