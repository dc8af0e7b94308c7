"""The audit trail of review and sign-off through the API: reading the review, changing it and
signing are rows with the physician, the study and its patient."""
from __future__ import annotations

import pytest

from neuropetrix.store.audit import SUCCESS, AuditTrail
from tests.review.conftest import (  # noqa: F401  (fixtures)
    accounts_db,
    analysed,
    bearer,
    login,
    make_env,
    named_physician,
    petct_study,
    review_client,
)

pytestmark = pytest.mark.asyncio


async def test_review_and_sign_are_recorded(review_client) -> None:  # noqa: F811
    review, client = review_client
    review.env.add_instance(review.study_uid, patient_id="10000000146")
    who = bearer(await login(client, "physician"))
    base = f"/api/studies/{review.study_uid}"
    body = await (await client.get(f"{base}/review", headers=who)).json()
    label = body["lesions"][0]["label"]
    assert (await client.post(f"{base}/review", headers=who,
                              json={"decisions": [{"label": label, "decision": "rejected"}]})).status == 200
    assert (await client.post(f"{base}/sign", headers=who)).status == 202
    rows = AuditTrail(review.env.sessions).query(user="physician")
    acts = [(r["action"], r["outcome"], r["study_uid"]) for r in reversed(rows) if r["action"] != "login"]
    assert acts == [("read", SUCCESS, review.study_uid), ("review", SUCCESS, review.study_uid),
                    ("sign", SUCCESS, review.study_uid)]
    assert {r["patient_id"] for r in rows if r["study_uid"]} == {"10000000146"}
