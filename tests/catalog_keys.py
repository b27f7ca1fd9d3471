"""Catalog signing keys for the tests: the publisher's and one nobody trusts (fixed, so failures reproduce)."""

from __future__ import annotations

import base64

from core.signing import SigningKeys

#: ``EVENTFLOW_CATALOG_SIGNING_KEYS`` of the tests' publishers and readers.
CATALOG_KEYS_TEXT = "test-1=" + base64.b64encode(bytes(range(32))).decode()
CATALOG_KEYS = SigningKeys.parse(CATALOG_KEYS_TEXT)
#: A well-formed key with a trusted key's id that readers were never given (a forger's).
FORGED_KEYS = SigningKeys.parse("test-1=" + base64.b64encode(bytes(range(100, 132))).decode())
