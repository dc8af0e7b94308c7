"""Who may do what: the role → permission table (docs/api.md shows the same table to people)."""
from __future__ import annotations

STUDIES_READ = "studies.read"          # study list, study and series state, study events
RESULTS_READ = "results.read"          # analysis, lesion table, MIP; analysis events
RESULTS_DOWNLOAD = "results.download"  # SEG, SR and PDF files
DELIVERIES_READ = "deliveries.read"    # delivery states of a study; delivery events
JOBS_READ = "jobs.read"                # the job queue; job events
JOBS_RETRY = "jobs.retry"
CONFIG_READ = "config.read"            # routes and peers
USERS_MANAGE = "users.manage"
DEVICES_OWN = "devices.own"            # register and remove one's own push devices
PUSH_RESULTS = "push.results"          # pushed when an analysis is done
PUSH_FAILURES = "push.failures"        # pushed when an analysis fails
RESULTS_REVIEW = "results.review"      # decide on lesions, write the impression, re-run the analysis
RESULTS_SIGN = "results.sign"          # sign: the result becomes final (or amended), delivered again
ORDERS_READ = "orders.read"            # orders from the HBYS, the worklist, the reconcile list; order events
ORDERS_RECONCILE = "orders.reconcile"  # link a study to an order, or confirm it as unordered
HL7_READ = "hl7.read"                  # HL7 messages received and their ACKs
AUDIT_READ = "audit.read"              # the access audit trail (GET /api/audit)

ALL = frozenset({STUDIES_READ, RESULTS_READ, RESULTS_DOWNLOAD, DELIVERIES_READ, JOBS_READ, JOBS_RETRY,
                 CONFIG_READ, USERS_MANAGE, DEVICES_OWN, PUSH_RESULTS, PUSH_FAILURES, RESULTS_REVIEW, RESULTS_SIGN,
                 ORDERS_READ, ORDERS_RECONCILE, HL7_READ, AUDIT_READ})

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": ALL - {PUSH_RESULTS},
    "physician": frozenset({STUDIES_READ, RESULTS_READ, RESULTS_DOWNLOAD, DELIVERIES_READ, DEVICES_OWN,
                            PUSH_RESULTS, PUSH_FAILURES, RESULTS_REVIEW, RESULTS_SIGN, ORDERS_READ}),
    "technologist": frozenset({STUDIES_READ, RESULTS_READ, DELIVERIES_READ, JOBS_READ, CONFIG_READ,
                               DEVICES_OWN, PUSH_FAILURES, ORDERS_READ, ORDERS_RECONCILE}),
    "viewer": frozenset({STUDIES_READ, DEVICES_OWN}),
}

# An event is shown to a user who holds the permission of its family (the part before the dot).
_EVENT_FAMILIES = {"study": STUDIES_READ, "analysis": RESULTS_READ, "notification": RESULTS_READ,
                   "review": RESULTS_READ,
                   "delivery": DELIVERIES_READ, "job": JOBS_READ, "order": ORDERS_READ}


def allows(role: str, permission: str) -> bool:
    return permission in ROLE_PERMISSIONS.get(role, frozenset())


def event_permission(kind: str) -> str:
    """The permission needed to see an event of `kind`; unknown families are for administrators."""
    return _EVENT_FAMILIES.get(kind.split(".", 1)[0], USERS_MANAGE)


def roles_with(permission: str) -> list[str]:
    return [role for role, perms in ROLE_PERMISSIONS.items() if permission in perms]
