"""The end-to-end tests' real processes (a loopback app server, `mediaedge serve`): they
live in bench/edge.py, as the bench runs them too and must not import the test tree."""
from bench.edge import (REPO, SECRET, Edge, Route, Upstream, edge_with_upstream, free_port, get_plain, publish, sha,
                        status_of, synthetic_chunk, synthetic_sha, venv_executable, wait_until)

__all__ = ["REPO", "SECRET", "Edge", "Route", "Upstream", "edge_with_upstream", "free_port", "get_plain", "publish",
           "sha", "status_of", "synthetic_chunk", "synthetic_sha", "venv_executable", "wait_until"]
