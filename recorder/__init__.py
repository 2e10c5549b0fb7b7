"""Session recordings: asciicast files, hash-chained and signed, indexed in SQLite."""
