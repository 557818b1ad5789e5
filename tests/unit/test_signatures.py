"""The shared pieces of webhook verification: constant-time comparison, the timestamp
window, and an HMAC scheme built from them as the next connectors will build theirs."""

from __future__ import annotations

import base64
from collections.abc import Mapping

import pytest

from worker.base.signatures import (
    BadSignature,
    SignatureVerifier,
    check_timestamp,
    hmac_sha256,
    same_secret,
)
from worker.systems.engage.webhooks import SvixVerifier

NOW = 1_800_000_000


@pytest.mark.parametrize(("given", "wanted", "same"), [
    ("key", "key", True),
    ("key", "other", False),
    ("", "", False),
    ("", "key", False),
    ("key", "", False),
    ("clé\udcff", "clé", False),  # anything a header carries is compared, never raised on
])
def test_same_secret(given: str, wanted: str, same: bool) -> None:
    assert same_secret(given, wanted) is same


@pytest.mark.parametrize("offset", [0, 299, -299, 300, -300])
def test_a_timestamp_within_the_tolerance_is_accepted(offset: int) -> None:
    assert check_timestamp(str(NOW + offset), 300, header="x-ts", now=NOW) == NOW + offset


@pytest.mark.parametrize(("offset", "side"), [(-301, "too old"), (301, "too new")])
def test_a_timestamp_outside_the_tolerance_is_refused(offset: int, side: str) -> None:
    with pytest.raises(BadSignature, match=f"x-ts {side}"):
        check_timestamp(str(NOW + offset), 300, header="x-ts", now=NOW)


def test_a_timestamp_that_is_not_a_unix_time_is_refused() -> None:
    with pytest.raises(BadSignature, match="x-ts is not a Unix time"):
        check_timestamp("soon", 300, header="x-ts", now=NOW)


class HmacVerifier:
    """`t=<unix>,v1=<hex hmac of "t.body">`: the shape of the HMAC schemes to come."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        parts = headers.get("sig", "").split(",")
        fields = dict(part.split("=", 1) for part in parts if "=" in part)
        stamp = check_timestamp(fields.get("t", ""), 300, header="sig t", now=NOW)
        wanted = hmac_sha256(self.secret, f"{stamp}.".encode() + body).hex()
        if not same_secret(fields.get("v1", ""), wanted):
            raise BadSignature("signature: does not match the body")


def test_an_hmac_scheme_is_a_signature_verifier() -> None:
    verifier: SignatureVerifier = HmacVerifier(b"s3cret")
    body = b'{"a": 1}'
    good = hmac_sha256(b"s3cret", f"{NOW}.".encode() + body).hex()

    verifier.verify(body, {"sig": f"t={NOW},v1={good}"})
    with pytest.raises(BadSignature):
        verifier.verify(body + b" ", {"sig": f"t={NOW},v1={good}"})


def test_svix_is_a_signature_verifier_and_a_bad_secret_is_a_value_error() -> None:
    secret = "whsec_" + base64.b64encode(b"0" * 24).decode()
    verifier: SignatureVerifier = SvixVerifier(secret)
    with pytest.raises(BadSignature, match="missing header"):
        verifier.verify(b"{}", {})
    with pytest.raises(ValueError, match="non-empty base64") as caught:
        SvixVerifier("whsec_")
    assert caught.value.__cause__ is None
