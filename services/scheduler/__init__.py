"""The scheduler's pure placement pipeline (DESIGN §6 "scheduler").

Feasibility filters (`filters`) → scoring (`scoring`) → selection (`pipeline.decide`) →
a `DecisionRecord` that any member can recompute from the same `Snapshot`. Nothing in
this package does I/O: the async shell around it reads the snapshot from JetStream,
calls `decide`, and commits the result with compare-and-set.
"""
