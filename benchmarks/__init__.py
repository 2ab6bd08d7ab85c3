"""Benchmarks: `python -m benchmarks <name> [options]`, each printing one JSON object."""
