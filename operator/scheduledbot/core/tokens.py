"""Per-bot tokens derived from one operator key: nothing to store, nothing to read back.

Why derived
===========
Every call the operator makes to a bot Pod carries a bearer token that only that
bot knows. A random token would have to be stored (a Secret) and read back after an
operator restart, which takes `get` on Secrets in every namespace with bots, and
RBAC cannot limit `get` to the Secrets the operator made. A token computed from the
operator's key and the bot's identity is the same after a restart, on every replica,
and needs no read at all: the operator only creates the Secret that hands it to the
bot's Pod.

Both values are HMAC-SHA256 under the key, each over its own context string and
the bot's identity, so neither reveals the other or the key:

- the token, over the bot's namespace, name and uid (a bot deleted and created
  again under the same name gets a new uid, so a new token);
- the tag of the Secret's name, over the uid alone: a Secret of that name cannot be
  created in advance by anyone without the key (`core.children` says why that
  matters).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Final

#: The shortest key accepted: HMAC-SHA256's own block of security.
MIN_KEY_BYTES: Final = 32
#: Hex digits of the Secret name's tag: 40 bits, beyond guessing by creating Secrets.
TAG_LENGTH: Final = 10

_TOKEN: Final = b"meetingbots.dev/bot-token"
_SECRET: Final = b"meetingbots.dev/bot-token-secret"


def bot_token(key: bytes, *, namespace: str, name: str, uid: str) -> str:
    """The bearer token of one bot (43 URL-safe characters)."""
    digest = _mac(key, _TOKEN, namespace, name, uid)
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def secret_tag(key: bytes, *, uid: str) -> str:
    """The tag in the name of one bot's token Secret."""
    return _mac(key, _SECRET, uid).hex()[:TAG_LENGTH]


def _mac(key: bytes, context: bytes, *parts: str) -> bytes:
    # NUL-separated: no part may hold a NUL (names and uids cannot), so the fields never run together.
    message = b"\0".join((context, *(part.encode() for part in parts)))
    return hmac.new(key, message, hashlib.sha256).digest()
