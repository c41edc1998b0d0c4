"""The gRPC layer: the two servicers, message-array conversion, the domain-error-to-status
mapping and TLS credentials.
"""
