"""Every key a C-FIND narrows on is answered from an index, at every level where it can be asked, a
page taken by key (id above the last page's): SQLite's own query plan for the statements
query_retrieve runs says so (a table SCAN would make a 100,000-instance query read every row)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from sqlalchemy import text

from neuropetrix.engine.query_retrieve import _ORDER, PAGE, _statement
from neuropetrix.store.db import open_database

KEYS = {
    "PatientID": "P000042", "StudyInstanceUID": "1.2.3.4", "StudyDate": "20260101-20260131",
    "AccessionNumber": "A0000042", "SeriesInstanceUID": "1.2.3.4.1", "Modality": "PT",
    "SOPInstanceUID": "1.2.3.4.1.1",
}
LEVEL_OF = {"PatientID": "PATIENT", "StudyInstanceUID": "STUDY", "StudyDate": "STUDY", "AccessionNumber": "STUDY",
            "SeriesInstanceUID": "SERIES", "Modality": "SERIES", "SOPInstanceUID": "IMAGE"}
LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
# Known: images of a date range alone (a relational query viewers do not send) are read in id order,
# every instance looked at, because SQLite prefers the page's order to a range of unknown width.
KNOWN_SCANS = {("StudyDate", "IMAGE")}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory):
    engine, _ = open_database(f"sqlite:///{Path(tmp_path_factory.mktemp('plans')) / 'db.sqlite'}")
    yield engine
    engine.dispose()


def _plan(engine, level: str, keyword: str) -> list[str]:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    setattr(identifier, keyword, KEYS[keyword])
    stmt = _statement(level, identifier).where(_ORDER[level] > 0).limit(PAGE)
    sql = str(stmt.compile(engine, compile_kwargs={"literal_binds": True}))
    with engine.connect() as conn:
        return [row[-1] for row in conn.execute(text("EXPLAIN QUERY PLAN " + sql))]


@pytest.mark.parametrize("keyword", list(KEYS))
def test_each_key_is_searched_by_an_index_at_its_level_and_below(engine, keyword):
    for level in LEVELS[LEVELS.index(LEVEL_OF[keyword]):]:
        plan = _plan(engine, level, keyword)
        # a driving table read by its id range alone ("rowid>?", the page's key) is a scan too
        scans = [line for line in plan if re.match(r"SCAN (patients|studies|series|instances)\b", line)
                 or "USING INTEGER PRIMARY KEY (rowid>?)" in line]
        assert bool(scans) == ((keyword, level) in KNOWN_SCANS), f"{keyword} at {level}: {plan}"


def test_the_check_sees_a_key_without_an_index(engine):
    KEYS["StudyDescription"] = "PET"        # matched in SQL, but no index: every study read
    try:
        plan = _plan(engine, "STUDY", "StudyDescription")
    finally:
        del KEYS["StudyDescription"]
    assert any("USING INTEGER PRIMARY KEY (rowid>?)" in line or line.startswith("SCAN studies") for line in plan)
