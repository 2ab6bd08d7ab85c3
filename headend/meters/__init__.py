"""The meters the head-end serves: inventory import, sealed keys, access (one session per meter
and per line, commands first) and invocation counters."""
