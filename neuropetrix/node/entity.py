"""The node as a pynetdicom application entity.

Every association the node opens or accepts through pynetdicom (the SCUs, the storage-commitment
listener, `doctor`'s C-ECHO) names the node's implementation class UID and version name
(`dicom_uids`), as the SCP's own A-ASSOCIATE-AC does, rather than pynetdicom's.
"""
from __future__ import annotations

from pynetdicom import AE

from neuropetrix.dicom_uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME


def node_ae(ae_title: str) -> AE:
    """A pynetdicom AE with `ae_title` that speaks as this node."""
    ae = AE(ae_title=ae_title)
    ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    return ae
