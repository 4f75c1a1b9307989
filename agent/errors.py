"""The agent's errors: one root; subclasses carry data as attributes; timeouts are also TimeoutErrors."""

from __future__ import annotations


class AgentError(Exception):
    """Root of the agent's own errors."""


class ConfigError(AgentError):
    """The configuration cannot be used; the message names the field, the value and what to do."""


class LeaseError(AgentError):
    """A certificate or lease that this gateway must not use; `reason` is a short machine-readable code."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class IdentityError(AgentError):
    """The gateway key cannot be created or used safely (wrong file mode, unreadable, corrupt)."""


class JournalError(AgentError):
    """The journal cannot be used."""


class JournalCorruptError(JournalError):
    """The journal fails its integrity or hash-chain check; `seq` is the first bad sequence number."""

    def __init__(self, message: str, *, seq: int | None) -> None:
        super().__init__(message)
        self.seq = seq


class JournalFrozenError(JournalError):
    """The platform froze this gateway (its journal was restored from a backup): nothing new is written."""


class LeaseClosedError(JournalError):
    """An attempt on a lease this gateway closed cannot change any more; `lease_id` and `seq` name the close."""

    def __init__(self, message: str, *, lease_id: str, seq: int) -> None:
        super().__init__(message)
        self.lease_id = lease_id
        self.seq = seq


class OpenAttemptsError(JournalError):
    """A lease cannot be closed while attempts on it are open (reserved or in doubt); `sns` names their units."""

    def __init__(self, message: str, *, lease_id: str, sns: tuple[str, ...]) -> None:
        super().__init__(message)
        self.lease_id = lease_id
        self.sns = sns


class DiskFullError(JournalError):
    """Too little disk left to journal safely: new scans are refused until space is freed."""


class JournalTimeoutError(JournalError, TimeoutError):
    """A journal read or write did not finish within its named timeout (a stalled disk)."""


class RadioError(AgentError):
    """A radio failed to reach or talk to a device.

    `sent` tells whether a request may have left the gateway: a rebadge that failed after sending leaves
    the slot in doubt; one that failed before is released.
    """

    def __init__(self, message: str, *, sn: str | None = None, sent: bool = False) -> None:
        super().__init__(message)
        self.sn = sn
        self.sent = sent


class RadioStartError(RadioError):
    """A radio did not start; `permanent` says whether trying again can help (a port in use may free up, a missing
    permission will not)."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class DeviceNotFoundError(RadioError):
    """No device with this SN answered on this radio."""


class DeviceTimeoutError(RadioError, TimeoutError):
    """The device did not answer within the named timeout."""


class LinkLostError(RadioError):
    """The connection to the device dropped mid-exchange."""


class ProtocolError(RadioError):
    """The device answered with bytes that are not a valid message."""


class UplinkError(AgentError):
    """The MQTT uplink cannot do what was asked."""


class RenewalError(UplinkError):
    """The platform refused a certificate renewal, or sent back one this gateway cannot use."""


class BrokerUnreachableError(UplinkError):
    """A command could not reach the MQTT broker within its timeout."""


class AckTimeoutError(UplinkError, TimeoutError):
    """The platform's ack did not cover `seq` within the caller's timeout; `acked` is how far it got."""

    def __init__(self, message: str, *, seq: int, acked: int) -> None:
        super().__init__(message)
        self.seq = seq
        self.acked = acked


class RequestTimeoutError(UplinkError, TimeoutError):
    """The platform did not answer request `request_id` (operation `op`) within the caller's timeout."""

    def __init__(self, message: str, *, op: str, request_id: str) -> None:
        super().__init__(message)
        self.op = op
        self.request_id = request_id


class LeaseRefusedError(LeaseError):
    """The platform answered a lease request with a refusal; `reason` is its answer code (no_slots, refused, ...)."""
