"""Throw-away PostgreSQL and MariaDB servers for the test suite: they live in
bench/dbservers.py, as the bench starts them too and must not import the test tree."""
from bench.dbservers import MariaDbServer, PostgresServer, ServerFailed, ServerUnavailable, free_port

__all__ = ["MariaDbServer", "PostgresServer", "ServerFailed", "ServerUnavailable", "free_port"]
