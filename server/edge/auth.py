"""Bearer tokens with roles: who is calling, and may that role make this call.

Tokens come from a file (``--tokens-file``: one ``role:token`` per line, ``#``
comments allowed, or a JSON object ``{"token": "role"}`` / list of
``{"role": ..., "token": ...}``) or from ``REGSERVE_TOKENS`` (``"admin:abc,predict:def"``).
Only their SHA-256 digests are kept, and a presented token is checked against every
digest with ``hmac.compare_digest``, so neither the table nor the timing tells a token.

Roles: ``predict`` may call the methods whose role in ``regserve.server.rpc.methods``
is ``predict`` (the read-only ones); ``admin`` may call everything.  Health and
reflection never reach this module (they are left open for probes at the edge).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from regserve.server.errors import PermissionDenied, Unauthenticated
from regserve.server.rpc.methods import METHODS, Role

__all__ = ["ADMIN", "ANONYMOUS", "PREDICT", "SENT_TWICE", "Principal", "TokenTable", "authorize", "role_allows"]

PREDICT = Role.PREDICT.value
ADMIN = Role.ADMIN.value
ROLES = tuple(role.value for role in Role)

_BEARER = "bearer "
SENT_TWICE = "\0authorization sent twice"
"""What the edge passes as the authorization of a call that carries it more than once (compared by identity)."""


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: its role and a short, non-secret id (a prefix of its token's digest)."""

    role: str
    id: str

    def __str__(self) -> str:
        return f"{self.role}:{self.id}"


ANONYMOUS = Principal("anonymous", "-")
"""The caller when authentication is off."""


def role_allows(role: str, method: str) -> bool:
    """True when ``role`` may call the full ``method`` name (``/package.Service/Method``)."""
    if role == ADMIN:
        return True
    entry = METHODS.get(method)
    return role == PREDICT and entry is not None and entry.role is Role.PREDICT


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


_PLACEHOLDER = "REPLACE-ME"
"""What the example manifests write where a token belongs."""


class TokenTable:
    """The known tokens, by digest, each with its role.

    Parameters
    ----------
    entries : iterable of (role, token)
    """

    def __init__(self, entries: Iterable[tuple[str, str]]) -> None:
        self._entries: list[tuple[bytes, Principal]] = []
        for role, token in entries:
            role, token = role.strip(), token.strip()
            if role not in ROLES:
                raise ValueError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
            if not token:
                raise ValueError(f"empty token for role {role!r}")
            if _PLACEHOLDER in token.upper():
                # The example Secret's values: applied unchanged, anyone who read the example holds them.
                raise ValueError(f"a token of role {role!r} still reads {_PLACEHOLDER}: set a secret value of your own")
            digest = _digest(token)
            known = next((principal for seen, principal in self._entries if seen == digest), None)
            if known is not None and known.role != role:
                # The first entry would win, so the role written second would never apply.
                raise ValueError(f"a token of role {role!r} is also a token of role {known.role!r}: give each its own")
            if known is None:
                self._entries.append((digest, Principal(role, digest.hex()[:8])))
        if not self._entries:
            raise ValueError("authentication is on but no tokens were given")

    def __len__(self) -> int:
        return len(self._entries)

    @classmethod
    def parse(cls, text: str) -> TokenTable:
        """Read ``role:token`` pairs separated by commas or newlines, or the JSON forms described above."""
        return cls(_pairs(text))

    @classmethod
    def load(cls, tokens_file: str = "", tokens: str = "") -> TokenTable | None:
        """The tokens of ``tokens_file`` and of the ``tokens`` string together, as one table: a token under
        two roles is refused across the two as within one; None when both are empty."""
        texts = [Path(tokens_file).read_text(encoding="utf-8")] if tokens_file else []
        if tokens.strip():
            texts.append(tokens)
        if not texts:
            return None
        return cls(pair for text in texts for pair in _pairs(text))

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an ``authorization`` header value; raises Unauthenticated."""
        if not authorization:
            raise Unauthenticated(
                "This call needs a bearer token in the authorization metadata.", reason="MISSING_TOKEN"
            )
        if authorization is SENT_TWICE:
            raise Unauthenticated(
                "The call carries the authorization metadata more than once; send one bearer token.",
                reason="MALFORMED_TOKEN",
            )
        if authorization[:7].lower() != _BEARER:
            raise Unauthenticated("The authorization metadata must read 'Bearer <token>'.", reason="MALFORMED_TOKEN")
        digest = _digest(authorization[7:].strip())
        found = None
        for known, principal in self._entries:
            # Compare with every entry, whatever matched before, so timing does not tell which one did.
            if hmac.compare_digest(known, digest):
                found = principal
        if found is None:
            raise Unauthenticated("The bearer token is not known to this server.", reason="UNKNOWN_TOKEN")
        return found


_JSON_FORMS = 'a JSON tokens document is {"TOKEN": "ROLE", ...} or [{"role": "ROLE", "token": "TOKEN"}, ...]'


def _pairs(text: str) -> list[tuple[str, str]]:
    """The (role, token) pairs of ``role:token`` entries separated by commas or newlines, or of a JSON document."""
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        data = json.loads(stripped)
        if isinstance(data, dict) and all(isinstance(role, str) for role in data.values()):
            return [(role, token) for token, role in data.items()]
        found: list[tuple[str, str]] = []
        for item in data if isinstance(data, list) else [None]:
            role, token = (item.get("role"), item.get("token")) if isinstance(item, dict) else (None, None)
            if not (isinstance(role, str) and isinstance(token, str)):
                raise ValueError(_JSON_FORMS)
            found.append((role, token))
        return found
    pairs = []
    for line in stripped.replace(",", "\n").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        role, sep, token = line.partition(":")
        if not sep:
            raise ValueError("each token entry must read role:token")
        pairs.append((role, token))
    return pairs


def authorize(principal: Principal, method: str) -> None:
    """Raise PermissionDenied unless ``principal`` may call ``method``."""
    if not role_allows(principal.role, method):
        raise PermissionDenied(
            f"The {principal.role} role may not call {method}.",
            reason="ROLE_NOT_ALLOWED",
            metadata={"role": principal.role, "method": method},
        )
