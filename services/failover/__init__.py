"""failover: heartbeat watching, signed suspicions, quorum-confirmed down and recovery."""
