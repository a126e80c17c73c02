"""The webhook CA that replicas share: made once, read back by the others, refused when unusable.

The Secret store is a fake with the API server's create semantics (AlreadyExists when
another replica was first); tests/e2e/test_replicas.py runs the same against the real one.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from scheduledbot.runtime.webhook import make_authority
from scheduledbot.runtime.webhook_ca import _secret, authority_of, shared_authority

NOW = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


class SecretStore:
    def __init__(self, *, raced_by: dict[str, Any] | None = None) -> None:
        self.secret: dict[str, Any] | None = None
        self.raced_by = raced_by
        self.creates = 0

    async def read_webhook_ca(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.secret)

    async def create_webhook_ca(self, namespace: str, body: dict[str, Any]) -> bool:
        self.creates += 1
        if self.raced_by is not None:  # another replica created it between our read and our create
            self.secret = self.raced_by
            return False
        self.secret = copy.deepcopy(body)
        return True


def pem(authority: Any) -> bytes:
    return bytes(authority[0].public_bytes(serialization.Encoding.PEM))


async def test_the_first_replica_makes_and_stores_the_ca_and_the_next_reads_the_same_one() -> None:
    store = SecretStore()
    first = await shared_authority(store, namespace="ops", name="ca", now=NOW)  # type: ignore[arg-type]
    second = await shared_authority(store, namespace="ops", name="ca", now=NOW)  # type: ignore[arg-type]
    assert pem(first) == pem(second)
    assert store.creates == 1
    assert first[0].not_valid_after_utc - NOW > dt.timedelta(days=3000)


async def test_a_replica_that_loses_the_creation_race_uses_the_winners_ca() -> None:
    winner = make_authority(now=NOW)
    store = SecretStore(raced_by=_secret("ops", "ca", winner))
    got = await shared_authority(store, namespace="ops", name="ca", now=NOW)  # type: ignore[arg-type]
    assert pem(got) == pem(winner)


def _broken(change: str) -> dict[str, Any]:
    secret = _secret("ops", "ca", make_authority(now=NOW, days=10))
    if change == "no key":
        del secret["data"]["ca.key"]
    elif change == "garbage":
        secret["data"]["ca.crt"] = base64.b64encode(b"not a certificate").decode()
    elif change == "other key":
        secret["data"]["ca.key"] = _secret("ops", "ca", make_authority(now=NOW))["data"]["ca.key"]
    return secret


@pytest.mark.parametrize(
    ("change", "now", "message"),
    [
        ("no key", NOW, "must hold a PEM CA certificate (ca.crt) and its EC key (ca.key)"),
        ("garbage", NOW, "must hold a PEM CA certificate"),
        ("other key", NOW, "ca.key is not the EC key of ca.crt"),
        ("", NOW + dt.timedelta(days=11), "the webhook CA expired"),
    ],
)
def test_an_unusable_ca_secret_is_refused_naming_it_and_what_to_do(change: str, now: dt.datetime, message: str) -> None:
    with pytest.raises(ValueError, match="Secret ops/ca") as raised:
        authority_of(_broken(change), where="Secret ops/ca", now=now)
    assert message in str(raised.value)
    assert "delete it and restart the replicas" in str(raised.value)
