"""soc: federation events as CloudEvents 1.0 for government security operations centres."""
