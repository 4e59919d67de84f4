"""A/B experiments: deterministic assignment, a durable exposure/outcome log, and analysis
that stays valid while people watch it."""
