"""The platform's errors: one root; subclasses carry data as attributes; each message says what to do."""

from __future__ import annotations


class CloudError(Exception):
    """Root of the platform's own errors."""


class ConfigError(CloudError):
    """The platform cannot start with this configuration (data dir, database URL, key file)."""


class NotFoundError(CloudError):
    """A named thing (certificate, lease, gateway, product, account) does not exist."""

    def __init__(self, message: str, *, what: str, key: str) -> None:
        super().__init__(message)
        self.what = what
        self.key = key


class ConflictError(CloudError):
    """The request cannot apply in the current state (a revoked certificate, a product still in development)."""


class NoSlotsLeftError(ConflictError):
    """Every slot of a certificate is already leased or spent."""

    def __init__(self, message: str, *, cert_no: str) -> None:
        super().__init__(message)
        self.cert_no = cert_no


class GatewayRevokedError(ConflictError):
    """A revoked gateway asked for something only a trusted gateway may have."""

    def __init__(self, message: str, *, gw: str) -> None:
        super().__init__(message)
        self.gw = gw


class GatewayFrozenError(ConflictError):
    """A gateway whose journal forked asked for something; an admin must reinstate it first."""

    def __init__(self, message: str, *, gw: str) -> None:
        super().__init__(message)
        self.gw = gw


class InvalidRequestError(CloudError):
    """Input that does not make sense; `field` names the offending field."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class PermissionDeniedError(CloudError):
    """The caller's role or organisation may not do this."""


class AuthenticationError(CloudError):
    """No API key, or one that matches no active account."""
