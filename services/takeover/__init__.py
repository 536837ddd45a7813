"""takeover: the saga of DESIGN §6 (plan → quorum approval → per-workload steps → report).

Drill mode only for now: the same steps with the source untouched, each successor
starting a shadow copy and stopping it again. Pure modules: `plan` (plan and its hash),
`approval` (checking proposals, counting approvals), `saga` (record transitions),
`report` (the report as dict and Markdown); the I/O is in `service`.
"""
