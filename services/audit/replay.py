"""The whole audit of a replayed stream: signatures against the roster of their time, then
every decision among the messages that verified. Fed in stream order; pure."""

from __future__ import annotations

from mesh.bus import StoredMessage
from mesh.envelope import H_MEMBER
from services.audit.decisions import DecisionAudit
from services.audit.report import AuditReport, SignatureFailure
from services.audit.signatures import Checked, SignatureAudit


class Auditor:
    def __init__(self, *, since: int = 1) -> None:
        self.since = since
        self.signatures = SignatureAudit()
        self.decisions = DecisionAudit()
        self.report = AuditReport(since=since)

    def feed(self, message: StoredMessage) -> None:
        for checked in self.signatures.feed(message):
            self._record(checked)

    def finish(self) -> AuditReport:
        for checked in self.signatures.finish():
            self._record(checked)
        self.report.roster_versions = self.signatures.timeline.version
        self.report.decisions = self.decisions.checked
        self.report.mismatches = list(self.decisions.mismatches)
        return self.report

    def _record(self, checked: Checked) -> None:
        message = checked.message
        counted = message.seq >= self.since  # earlier ones only build up the history
        if counted:
            self.report.messages += 1
        if checked.failure is not None:
            if counted:
                self.report.signature_failures.append(SignatureFailure(
                    seq=message.seq, subject=message.subject,
                    claimed_member=message.headers.get(H_MEMBER, ""),
                    reason=checked.failure.reason, detail=checked.failure.detail))
            return
        if counted:
            self.report.signatures_ok += 1
        assert checked.event is not None
        self.decisions.feed(message.seq, checked.event, count=counted)
