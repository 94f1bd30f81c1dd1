"""The state store: subject and generation states, the store protocol, SQLite, the job lock."""
