"""`python -m headend.cli`: the same command as the `headend` script (tests run it this way)."""

from headend.cli.app import main

main()
