"""Job files: their schema, loading with ``subject.toml`` overrides, and prompt templates."""
