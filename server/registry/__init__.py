"""The model registry: versions on disk, the in-memory store that serves them, and traffic
routing; no transport is imported here.

``store.ModelStore`` is the door every other layer goes through.  Beneath it:
``disk`` (the versioned files, locked per model), ``files`` (crash-safe writes, npz),
``state`` (the stored state and metadata as frozen values), ``lifecycle`` (the rules of
promotion, rollback, freezing, splits and deletion), ``routing`` (split weights and arm
choice), ``routes`` (what the in-memory snapshot holds), ``probe``, ``promotion_gate``
and ``events``.
"""
