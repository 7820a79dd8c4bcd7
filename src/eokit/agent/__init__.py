"""Expose eokit capabilities to agents as typed, schema-checked tools."""
