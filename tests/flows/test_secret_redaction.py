"""A remote's error body that echoes a secret is masked before it is stored or returned."""

from __future__ import annotations

from tests.support.flows import TREAZURE, FakeRemotes, Parts
from worker.base.point_request import validate_request
from worker.flows.points.booking import add_points
from worker.store.ledger import Ledger

CONTACT = "6c1e0000-0000-0000-0000-000000000001"
# What the flow settings configure (tests/flows/conftest.py), and the token they are given.
SECRETS = ("s3cr3t-client", "s3cr3t-key", "Bearer tok")


async def test_a_refusal_echoing_secrets_is_stored_and_returned_masked(
    parts: Parts, remotes: FakeRemotes
) -> None:
    router = remotes.forget[0]
    router.post(f"{TREAZURE}/api/v1.0/LoyaltyVault/Account/{CONTACT}/Transaction").respond(
        400, text="<html><h1>Request blocked</h1><pre>Authorization: Bearer tok\n"
                  "client_secret=s3cr3t-client apikey: s3cr3t-key</pre></html>")
    request = validate_request(CONTACT, "10", "welcome bonus", "ref-echo-1")

    outcome = await add_points(parts, request, "task")  # type: ignore[arg-type]

    row = Ledger(parts.store).get("ref-echo-1")
    assert row is not None and row.state == outcome.state == "failed"
    result = outcome.as_dict()  # what the Celery task returns (and Flower shows)
    for text in (row.reason or "", str(result)):
        assert "Request blocked" in text and "***" in text
        assert not [secret for secret in SECRETS if secret in text]
