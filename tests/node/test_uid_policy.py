"""One UID policy: what the node makes is UUID-derived (2.25) or numbered under its own arc, and every
file it writes names its implementation class UID (the SCP's file meta and A-ASSOCIATE-AC: test_encoding;
SEG/SR/PDF: tests/reports/test_writer.py; the SCU's association: tests/reports/test_forwarding.py)."""
from __future__ import annotations

import pydicom
from pydicom.uid import UID

from neuropetrix.dicom_uids import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    derived_uid,
    is_uid,
    new_uid,
)
from neuropetrix.node.scu.commitment import job_of, transaction_uid
from neuropetrix.phantoms.wholebody import write_study


def test_storage_commitment_transaction_names_its_job_under_the_nodes_arc():
    for job_id, attempt in ((1, 1), (987654321012, 99)):
        transaction = transaction_uid(job_id, attempt)
        assert is_uid(transaction) and transaction.startswith(IMPLEMENTATION_CLASS_UID + ".")
        assert job_of(transaction) == (job_id, attempt)
    # pydicom's arc (where these lived before), another arc of ours, another shape: not our transactions
    assert job_of("1.2.826.0.1.3680043.8.498.1.20.5.1") is None
    assert job_of(f"{IMPLEMENTATION_CLASS_UID}.2.5.1") is None
    assert job_of(f"{IMPLEMENTATION_CLASS_UID}.1.5") is None


def test_made_uids_are_uuid_derived_and_derived_ones_repeat():
    made = {new_uid() for _ in range(100)}
    assert len(made) == 100 and all(u.startswith("2.25.") and UID(u).is_valid for u in made)
    assert derived_uid("study", "seg") == derived_uid("study", "seg")
    assert derived_uid("study", "seg").startswith("2.25.") and UID(derived_uid("study", "seg")).is_valid
    # the sources are kept apart: moving a separator between them is another UID
    assert derived_uid("a\\b", "c") != derived_uid("a", "b\\c")


def test_the_phantom_is_written_by_the_node(tmp_path):
    write_study(tmp_path, pet_matrix=16, with_ct=False, noise=0.0)
    first = pydicom.dcmread(next((tmp_path / "PT").iterdir()), stop_before_pixels=True)
    assert first.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert first.file_meta.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME
    assert first.SOPInstanceUID.startswith("2.25.") and first.StudyInstanceUID.startswith("2.25.")
