"""`python -m simulators` = `dlms-sim`."""

from simulators.cli import main

raise SystemExit(main())
