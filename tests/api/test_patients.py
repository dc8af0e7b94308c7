"""/api/patients: patients with their study counts, and one patient's timeline (studies in date order
with analysis numbers and review state)."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from neuropetrix.store.db import utcnow
from neuropetrix.store.models import Patient
from neuropetrix.store.reviews import Review
from tests.api.conftest import bearer, login

pytestmark = pytest.mark.asyncio
BASELINE, FOLLOW_UP, OTHER = "1.2.826.0.1.3680043.10.5.1", "1.2.826.0.1.3680043.10.5.2", "1.2.826.0.1.3680043.10.5.3"


@pytest.fixture
def visits(env):
    """Patient 10000000146 (a valid TCKN) with a baseline and a follow-up; DEMIR^ALI with one study."""
    for uid, date in ((FOLLOW_UP, "20261124"), (BASELINE, "20250602")):
        for modality, series in (("CT", 1), ("PT", 2)):
            env.add_instance(uid, modality, series, patient_id="10000000146", patient_name="YILMAZ^AYŞE",
                             study_date=date, accession_number=f"ACC{date}")
    env.add_instance(OTHER, "CT", 1, patient_id="P9", patient_name="DEMIR^ALI", study_date="20261001")
    results = env.data_dir / "results" / FOLLOW_UP
    results.mkdir(parents=True)
    (results / "analysis.json").write_text(json.dumps({
        "suv_type": "bw", "lesion_count": 2, "suv_max": 9.5, "tmtv_ml": 12.5, "tlg_total": 60.0,
        "lesions": [{"suv_peak": 7.25}, {"suv_peak": 4.0}],
        "response": {"criteria": "PERCIST 1.0", "category": "PMR", "prior_study_uid": BASELINE,
                     "sul_peak_after": 3.1, "percent_change": -48.0}}))
    with env.sessions.begin() as s:
        s.add(Review(study_uid=FOLLOW_UP, status="final", version=2, candidates={}, decisions={}, impression="",
                     route="", updated_at=utcnow()))
    return env


async def test_patients_listed_with_their_study_counts(visits, aiohttp_client):
    client = await aiohttp_client(visits.app())
    headers = bearer(await login(client, "viewer"))
    body = await (await client.get("/api/patients", headers=headers)).json()
    assert body["total"] == 2
    first, second = body["items"]
    assert (first["patient_id"], first["study_count"], first["last_study_date"], first["tckn"]) == \
        ("10000000146", 2, "20261124", True)
    assert (second["patient_id"], second["study_count"], second["tckn"]) == ("P9", 1, False)
    found = await (await client.get("/api/patients?q=demir", headers=headers)).json()
    assert [p["patient_id"] for p in found["items"]] == ["P9"]
    paged = await (await client.get("/api/patients?limit=1&offset=1", headers=headers)).json()
    assert [p["patient_id"] for p in paged["items"]] == ["P9"] and paged["total"] == 2


async def test_one_patient_timeline_with_analysis_and_review(visits, aiohttp_client):
    client = await aiohttp_client(visits.app())
    with visits.sessions() as s:
        pk = s.scalar(select(Patient.id).where(Patient.patient_id == "10000000146"))
    physician = bearer(await login(client, "physician"))
    r = await client.get(f"/api/patients/{pk}", headers=physician)
    assert r.status == 200
    body = await r.json()
    assert body["name"] == "YILMAZ^AYŞE" and [st["study_uid"] for st in body["studies"]] == [BASELINE, FOLLOW_UP]
    baseline, follow_up = body["studies"]
    assert baseline["modalities"] == ["CT", "PT"] and baseline["instances"] == 2
    assert baseline["analysis"] is None and baseline["review"] is None
    assert follow_up["review"] == {"status": "final", "version": 2}
    assert follow_up["analysis"]["suv_peak"] == 7.25 and follow_up["analysis"]["tmtv_ml"] == 12.5
    assert follow_up["analysis"]["response"]["category"] == "PMR"
    viewer = await (await client.get(f"/api/patients/{pk}", headers=bearer(await login(client, "viewer")))).json()
    assert "analysis" not in viewer["studies"][1]        # the viewer role may not read results
    missing = await client.get("/api/patients/999999", headers=physician)
    assert missing.status == 404
    assert (await client.get(f"/api/patients/{pk}")).status == 401
