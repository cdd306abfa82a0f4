"""Subscribers to the daemon: Python client, CLI listener, captions."""
