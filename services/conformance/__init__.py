"""conformance: the open contract checks a member's node must pass ("zwemdiploma").

Each check is a small async function against the running federation; the pure parts
(what a valid announcement is, whether heartbeats came on time, the JUnit report) are
in their own modules. `runner.run_suite` runs them in order, each with its own time.
"""
