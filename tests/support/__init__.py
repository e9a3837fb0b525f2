"""Helpers for Slotway's integration tests.

The modules here know how to start and stop real ``redis-server`` processes
(a single node or a whole Redis Cluster) and the ``slotway`` proxy binary.
``tests/conftest.py`` wraps them in pytest fixtures.
"""
