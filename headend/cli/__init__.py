"""The `headend` command line: app.py assembles the sub-commands, each in its own module."""
