"""MPPS: a scanner's completed procedure step completes its study as soon as the images it lists
have arrived, without waiting for the quiet time."""
from __future__ import annotations

import json
import time

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep as MPPS

from tests.conftest import storescu
from tests.support.nodeproc import running_node


def in_progress(study_uid: str) -> Dataset:
    ds = Dataset()
    step = Dataset()
    step.StudyInstanceUID = study_uid
    step.AccessionNumber = "ACC2026001"
    ds.ScheduledStepAttributesSequence = Sequence([step])
    ds.PatientName, ds.PatientID = "YILMAZ^AYŞE", "10000000146"
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "STORESCU"
    ds.PerformedProcedureStepStartDate, ds.PerformedProcedureStepStartTime = "20261124", "100000"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.Modality = "PT"
    ds.PerformedSeriesSequence = Sequence([])
    return ds


def completed(files) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = "COMPLETED"
    ds.PerformedProcedureStepEndDate, ds.PerformedProcedureStepEndTime = "20261124", "102000"
    by_series: dict[str, list[Dataset]] = {}
    for f in files:
        header = pydicom.dcmread(f, stop_before_pixels=True)
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = header.SOPClassUID, header.SOPInstanceUID
        by_series.setdefault(header.SeriesInstanceUID, []).append(ref)
    series = []
    for uid, refs in by_series.items():
        item = Dataset()
        item.SeriesInstanceUID = uid
        item.ReferencedImageSequence = Sequence(refs)
        series.append(item)
    ds.PerformedSeriesSequence = Sequence(series)
    return ds


def state(node) -> str:
    rows = json.loads(node.cli("studies", "--json").stdout)
    return rows[0]["state"] if rows else "none"


def test_completed_procedure_step_completes_the_study_when_its_images_are_in(tmp_path, small_study):
    spec, files = small_study
    with running_node(tmp_path, {"node": {"study_quiet_seconds": 3600}}) as node:
        ae = AE(ae_title="STORESCU")
        ae.add_requested_context(MPPS)
        assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title=node.ae_title)
        assert assoc.is_established
        try:
            step_uid = generate_uid()
            status, _ = assoc.send_n_create(in_progress(spec.study_uid), MPPS, step_uid)
            assert status.Status == 0
            wrong, _ = assoc.send_n_create(in_progress(spec.study_uid), MPPS, "1.2.03.x")
            assert wrong.Status == 0x0106

            assert storescu(node.dicom_port, *files[:-1]).returncode == 0
            status, _ = assoc.send_n_set(completed(files), MPPS, step_uid)
            assert status.Status == 0
            time.sleep(2.5)   # two completion sweeps: one image listed by the step is still missing
            assert state(node) == "receiving"

            assert storescu(node.dicom_port, files[-1]).returncode == 0
            deadline = time.monotonic() + 10
            while state(node) != "complete" and time.monotonic() < deadline:
                time.sleep(0.2)
            assert state(node) == "complete", "the quiet time is an hour: only the MPPS can complete it"

            again, _ = assoc.send_n_set(completed(files), MPPS, step_uid)
            assert again.Status == 0x0110                     # a final step cannot change
            unknown, _ = assoc.send_n_set(completed(files), MPPS, generate_uid())
            assert unknown.Status == 0x0112
            duplicate, _ = assoc.send_n_create(in_progress(spec.study_uid), MPPS, step_uid)
            assert duplicate.Status == 0x0111
        finally:
            assoc.release()
        log = node.log_text()
    assert f"study {spec.study_uid} complete (procedure step completed)" in log
    assert "status 0x0110 the step is already COMPLETED" in log
