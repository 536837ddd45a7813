"""Drivers run workload instances on a member's platform. See `base.Driver`."""
