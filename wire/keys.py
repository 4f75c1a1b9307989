"""Ed25519 keys and their ids. Raw 32-byte keys cross boundaries; kid = SHA-256(raw public key)[:8]."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from wire.errors import MalformedError

KEY_BYTES = 32
KID_BYTES = 8


def kid_of(public_raw: bytes) -> bytes:
    """The key id of a raw Ed25519 public key."""
    if len(public_raw) != KEY_BYTES:
        raise MalformedError(f"public key is {len(public_raw)} bytes, expected {KEY_BYTES}", field="key")
    return hashlib.sha256(public_raw).digest()[:KID_BYTES]


@dataclass(frozen=True)
class PublicKey:
    """A raw Ed25519 public key with its kid."""

    raw: bytes
    kid: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kid", kid_of(self.raw))

    def verifier(self) -> Ed25519PublicKey:
        """The cryptography object that verifies with this key."""
        return Ed25519PublicKey.from_public_bytes(self.raw)


@dataclass(frozen=True)
class SigningKey:
    """A raw Ed25519 private key (seed) with its public half."""

    seed: bytes
    public: PublicKey = field(init=False)

    def __post_init__(self) -> None:
        if len(self.seed) != KEY_BYTES:
            raise MalformedError(f"private key is {len(self.seed)} bytes, expected {KEY_BYTES}", field="key")
        pub = Ed25519PrivateKey.from_private_bytes(self.seed).public_key().public_bytes_raw()
        object.__setattr__(self, "public", PublicKey(pub))

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh random key."""
        return cls(Ed25519PrivateKey.generate().private_bytes_raw())

    @property
    def kid(self) -> bytes:
        """The key id of the public half."""
        return self.public.kid


class KeyRing:
    """Pinned public keys, looked up by kid."""

    def __init__(self, keys: list[PublicKey] | tuple[PublicKey, ...] = ()) -> None:
        self._by_kid = {k.kid: k for k in keys}

    def add(self, key: PublicKey) -> None:
        """Pin one more key."""
        self._by_kid[key.kid] = key

    def get(self, kid: bytes) -> PublicKey | None:
        """The pinned key with this kid, if any."""
        return self._by_kid.get(kid)

    def __len__(self) -> int:
        return len(self._by_kid)
