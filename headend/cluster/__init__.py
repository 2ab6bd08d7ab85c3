"""Several head-ends on one PostgreSQL (`[cluster]`): meters leased to one member at a time.

ownership.py is what the rest of the head-end sees (a meter's lease token, the fence); leases.py
claims and renews the leases; members.py keeps the heartbeat and load; notify.py wakes the
holder of a meter when any member creates a command for it; workers.py starts N members on
one host. Nothing here is imported by this file: the parts are imported where they are used."""
