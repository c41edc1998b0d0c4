"""The model registry: versions on a directory or on S3, the in-memory store that serves them, and traffic
routing; no transport is imported here.

``store.ModelStore`` is the door every other layer goes through.  Beneath it:
``disk`` (the versioned files; every state change a compare-and-swap), ``storage`` (where
the files live: a POSIX directory or S3, behind one interface), ``files`` (crash-safe writes, npz),
``state_file`` and ``version_files`` (parsing and bounding ``state.json``, checking a
version), ``file_checks`` (what those files must hold), ``state`` (the stored state and
metadata as frozen values), ``lifecycle`` (the rules of promotion, rollback, freezing,
splits and deletion), ``routing`` (split weights and arm choice), ``routes`` and
``route_builder`` (what the in-memory snapshot holds, and building it), ``problems``
(what is wrong with a stored model, as listings report it), ``text_limits`` (the length
of every caller's text), ``probe``, ``promotion_gate`` and ``events``.
"""
