"""registry: member announcements and capacity reports, materialised in KV."""
