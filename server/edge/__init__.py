"""The edge: the per-call work every regserve method passes through before its servicer
(request ids, bearer tokens and roles, rate limits, counting and the access log).
"""
