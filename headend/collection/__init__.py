"""Meter data collection: the due-time scheduler and the poller."""
