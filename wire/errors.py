"""Errors of the shared language: one root, subclasses carry the offending data as attributes."""

from __future__ import annotations


class WireError(ValueError):
    """Root of every error raised while encoding or decoding what crosses a boundary."""


class MalformedError(WireError):
    """Bytes or fields that do not parse; `field` names what was wrong when it is known."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class TokenError(WireError):
    """A signed token that must not be trusted."""

    def __init__(self, message: str, *, kind: str | None = None, kid: bytes | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.kid = kid


class UnknownKeyError(TokenError):
    """The token names a key id that is not pinned."""


class BadSignatureError(TokenError):
    """The signature does not verify, or the algorithm is not EdDSA."""


class WrongKindError(TokenError):
    """The token is of another kind than the one expected (a grant offered as a lease, say)."""


class FrameError(MalformedError):
    """A radio frame whose framing, length or checksum is wrong."""
