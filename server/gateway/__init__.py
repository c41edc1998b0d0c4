"""The REST/JSON gateway: HTTP routes read from the contract's ``google.api.http`` rules,
answered in process or proxied to gRPC.
"""
