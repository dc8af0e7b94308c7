"""Two associations bringing the same instances at once: one copy is kept, and its index row
describes that copy (not the other one's transfer syntax or size)."""
from __future__ import annotations

import threading

import pydicom
from sqlalchemy import select

from neuropetrix.store.models import Instance
from tests.conftest import storescu
from tests.node.test_scp_faults import make_server, nothing_in_incoming


def test_racing_duplicates_leave_the_row_of_the_kept_file(tmp_path, small_study):
    _, sent = small_study
    srv, files = make_server(tmp_path)
    results: dict[str, object] = {}
    try:
        # the same files, one sender converting them to Implicit VR, the other to Explicit VR
        senders = [threading.Thread(target=lambda opt=opt: results.__setitem__(opt, storescu(
            srv.port, *sent, options=(opt,)))) for opt in ("-xi", "-xe")]
        for t in senders:
            t.start()
        for t in senders:
            t.join()
    finally:
        srv.stop(grace=2)
    assert all(r.returncode == 0 for r in results.values()), [r.stderr for r in results.values()]
    with srv.ingest.index.engine.connect() as conn:
        rows = {r.sop_instance_uid: r for r in conn.execute(select(
            Instance.sop_instance_uid, Instance.path, Instance.size_bytes, Instance.transfer_syntax_uid))}
    assert len(rows) == len(sent)
    wrong = []
    for uid, row in rows.items():
        kept = files.path_of(row.path)
        meta = pydicom.dcmread(kept, stop_before_pixels=True).file_meta
        if (str(meta.TransferSyntaxUID), kept.stat().st_size) != (row.transfer_syntax_uid, row.size_bytes):
            wrong.append(uid)
    assert not wrong, f"{len(wrong)} of {len(rows)} index rows describe a copy that was not kept"
    assert nothing_in_incoming(files)
