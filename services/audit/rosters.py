"""The roster in force at each point of the FED stream, rebuilt from `iam.roster.v1` events.

The first roster event is the genesis (`verify_genesis`); every later version must follow
the one before it (`verify_successor`). A message is judged against the version in force
where it sits in the stream, not against today's roster: a key rotated out or a member
suspended later does not make its old messages suspect, and a key admitted later does not
make an earlier message good.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from contracts.iam import Roster
from mesh.errors import Rejected
from mesh.trust import TrustStore, verify_genesis
from services.iam.chain import body_hash, verify_successor


@dataclass
class RosterTimeline:
    versions: list[Roster] = field(default_factory=list)
    trust: TrustStore | None = None  # None until the genesis has been seen

    @property
    def version(self) -> int:
        return self.versions[-1].body.version if self.versions else 0

    def advance(self, roster: Roster) -> TrustStore:
        """Take `roster` into force after checking it against the chain so far; return
        the trust store to verify its own event with. Raises `Rejected`.

        A version seen before (the same fact published twice) must be the same body.
        """
        version = roster.body.version
        if self.versions and version <= self.version:
            known = self.versions[version - 1]
            if body_hash(known.body) != body_hash(roster.body):
                raise Rejected("roster_conflict",
                               f"a second, different roster version {version}")
            assert self.trust is not None
            return self.trust
        if not self.versions:
            verify_genesis(roster)
        else:
            verify_successor(self.versions[-1], roster)
        self.versions.append(roster)
        self.trust = TrustStore(roster)
        return self.trust
