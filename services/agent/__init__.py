"""agent: the member's bridge to its own platform, through a driver (sim or process)."""
