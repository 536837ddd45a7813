"""Stekker's contracts: msgspec Structs and subject names only, no I/O (DESIGN §4)."""
