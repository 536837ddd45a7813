"""What `stekker audit verify` found: counts, failures by reason, every mismatch."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from services.audit.decisions import Mismatch


@dataclass(frozen=True)
class SignatureFailure:
    seq: int
    subject: str
    claimed_member: str
    reason: str
    detail: str


@dataclass
class AuditReport:
    since: int = 1
    messages: int = 0
    signatures_ok: int = 0
    signature_failures: list[SignatureFailure] = field(default_factory=list)
    roster_versions: int = 0
    decisions: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.signature_failures and not self.mismatches and self.roster_versions > 0

    def failures_by_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(f.reason for f in self.signature_failures).items()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "since": self.since,
            "messages": self.messages,
            "signatures": {
                "ok": self.signatures_ok,
                "failed": len(self.signature_failures),
                "by_reason": self.failures_by_reason(),
                "failures": [vars(f) for f in self.signature_failures],
            },
            "roster_versions": self.roster_versions,
            "decisions": {"checked": self.decisions, "mismatches": len(self.mismatches)},
            "mismatches": [vars(m) for m in self.mismatches],
        }
