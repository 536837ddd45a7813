"""Every stored message's signature, checked against the roster of its time.

Pure: fed the stream's messages in order, it answers for each one the verified event or
the reason it fails. The checks are `mesh.envelope.open_message`'s (key in the roster,
subject publisher = signer, signature, retired keys, schema) without the replay window:
an audit reads old messages on purpose.

Nodes write the genesis to KV before its event reaches FED, so a node's first messages
may be stored just before the genesis event. The genesis is in force from the
federation's first moment: messages before it wait for it and are judged by it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from contracts.base import Event
from contracts.iam import RosterPublished
from mesh.bus import StoredMessage
from mesh.envelope import Envelope, open_message
from mesh.errors import Rejected
from mesh.trust import TrustStore
from services.audit.rosters import RosterTimeline

ROSTER_TYPE = RosterPublished.type_name()


@dataclass(frozen=True)
class Checked:
    """One message's verdict: `event` and `envelope` when it verified, else `failure`."""

    message: StoredMessage
    event: Event | None = None
    envelope: Envelope | None = None
    failure: Rejected | None = None


def _open(message: StoredMessage, trust: TrustStore) -> tuple[Event, Envelope]:
    return open_message(message.subject, message.headers, message.data, trust,
                        received=message.stored, stream_seq=message.seq, window_s=None)


def _claimed_roster(message: StoredMessage) -> RosterPublished | None:
    """The roster a roster event carries, read before its signature can be checked (the
    roster itself says which keys may sign it)."""
    import msgspec

    if message.headers.get("Fed-Type") != ROSTER_TYPE:
        return None
    try:
        return msgspec.json.decode(message.data, type=RosterPublished)
    except msgspec.DecodeError:
        return None


class SignatureAudit:
    def __init__(self) -> None:
        self.timeline = RosterTimeline()
        self._waiting: list[StoredMessage] = []  # stored before the genesis event

    def feed(self, message: StoredMessage) -> Iterator[Checked]:
        """Verdicts for `message` (and any messages that waited for the genesis)."""
        claimed = _claimed_roster(message)
        if claimed is not None:
            previous = self.timeline.trust
            try:
                trust = self.timeline.advance(claimed.roster)
            except Rejected as exc:
                yield Checked(message, failure=exc)
                return
            checked = self._check(message, trust)
            if checked.failure is not None and previous is not None:
                # Announced by a key the new version rotates out or drops: the version
                # before was still in force when it was signed.
                checked = self._check(message, previous)
            yield checked
            waiting, self._waiting = self._waiting, []
            for earlier in waiting:
                yield self._check(earlier, trust)
            return
        if self.timeline.trust is None:
            self._waiting.append(message)
            return
        yield self._check(message, self.timeline.trust)

    def finish(self) -> Iterator[Checked]:
        """Messages still waiting when the stream ended: there was no genesis to judge by."""
        for message in self._waiting:
            yield Checked(message, failure=Rejected("no_roster", "no genesis roster in FED"))
        self._waiting = []

    @staticmethod
    def _check(message: StoredMessage, trust: TrustStore) -> Checked:
        try:
            event, envelope = _open(message, trust)
        except Rejected as exc:
            return Checked(message, failure=exc)
        return Checked(message, event=event, envelope=envelope)
