"""Signed URLs for Python apps: `sign_target(target, secret, exp, kid=None)`.

The public face of `mediaedge.policy.signing` (the scheme is documented there and in
docs/private-media.md). A Django or Flask app that has mediaedge installed signs
links with it; the `mediaedge sign` command uses the same function.
"""
from __future__ import annotations

from mediaedge.policy.signing import SigningKey, parse_signing_key, sign_target, verify

__all__ = ["SigningKey", "parse_signing_key", "sign_target", "verify"]
