"""The configuration schema: one YAML file, every key with a default, validated with pydantic.

Unknown keys and bad values are refused (pydantic `extra="forbid"`), and `load_settings` turns
pydantic's errors into one message that names the key, e.g. ``node.dicom_port: …``.
"""
from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")   # PS3.5 AE: no backslash, no control chars


def check_ae_title(value: str) -> str:
    """An AE title as PS3.5 defines it: 1–16 characters, no backslash or control characters."""
    if not _AE_TITLE.match(value) or not value.strip():
        raise ValueError(f"{value!r} is not a valid AE title (1-16 printable characters, no backslash)")
    return value.strip()


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


Port = Annotated[int, Field(ge=1, le=65535)]


class TlsSettings(Section):
    """`node.tls`: the node's certificate, key and trust list (node/tls.py), for the TLS DICOM port
    and for every TLS connection the node makes or takes (peers[].tls, MLLP, the API)."""

    port: Port | None = None                       # the TLS DICOM SCP's port; null = no TLS SCP
    certificate: Path                              # PEM, the chain after the node's own certificate
    private_key: Path                              # PEM, readable by the node's user only
    # PEM CA bundle: callers' certificates are checked against it, and so are peers' (null = the
    # system's trust store for peers, and callers are not asked for a certificate)
    ca_certificates: Path | None = None
    require_client_certificate: bool = False       # with ca_certificates: refuse callers without one
    verify_peer_names: bool = True                 # a peer's certificate must name its host (or IP)

    @field_validator("certificate", "private_key", "ca_certificates")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value}: no such file")
        return value

    @model_validator(mode="after")
    def _client_certs(self) -> "TlsSettings":
        if self.require_client_certificate and self.ca_certificates is None:
            raise ValueError("require_client_certificate: give ca_certificates to check them against")
        return self


class NodeSettings(Section):
    ae_title: str = "NEUROPETRIX"
    dicom_host: str = "0.0.0.0"
    dicom_port: Port = 11112
    api_host: str = "127.0.0.1"
    api_port: Port = 8080
    data_dir: Path = Path("./var")
    # A group that may read stored DICOM and results (a PACS reader); null = the node's user alone.
    # The database and the key files stay 0600 either way (config/filemodes.py).
    data_group: str | None = None
    database_url: str | None = None
    accept_unknown_callers: bool = False
    check_called_ae: bool = True                   # refuse callers that address another AE title
    study_quiet_seconds: float = Field(30.0, gt=0)
    # Sized for a department: several scanners and a PACS sending at once, plus stragglers.
    max_associations: int = Field(32, ge=1, le=1000)
    acse_timeout: float = Field(15.0, gt=0)        # association negotiation
    dimse_timeout: float = Field(60.0, gt=0)       # waiting for the next DIMSE message
    network_timeout: float = Field(60.0, gt=0)     # a silent connection is closed after this
    max_pdu_size: int = Field(0, ge=0)             # 0 = unlimited: callers send large PDUs
    fsync: bool = True                             # fsync each instance before acknowledging it
    # below this much free space in storage/, new associations are refused (transient); 0 = never
    min_free_mb: int = Field(1024, ge=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    tls: TlsSettings | None = None
    plain_dicom: bool = True                       # false: only the TLS port listens (node.tls.port)

    _ae = field_validator("ae_title")(classmethod(lambda cls, v: check_ae_title(v)))

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "storage"

    @property
    def sqlite_file(self) -> Path | None:
        """The database file when it is the default SQLite one in the data folder."""
        return None if self.database_url else (self.data_dir / "neuropetrix.db").resolve()

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.sqlite_file}"


# A transform step as configured ({set: {...}}, {deidentify: {...}}, charset_utf8, …); the engine
# checks each step at start-up (engine/transforms) and names the route or peer it belongs to.
TransformStep = str | dict[str, Any]


class Peer(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    ae_title: str
    host: str
    port: Port
    transforms: list[TransformStep] = []           # applied to everything sent to this peer
    # applied to everything received from this peer before it is stored (then re-encoded; without
    # inbound transforms an instance is stored exactly as it arrived)
    transforms_in: list[TransformStep] = []
    tls: bool = False                              # call it over TLS (node.tls's certificate and trust list)
    timeout: float = Field(30.0, gt=0)             # seconds for the connection and each answer (C-STORE, C-FIND)

    _ae = field_validator("ae_title")(classmethod(lambda cls, v: check_ae_title(v)))


class HostPort(Section):
    host: str
    port: Port


class MllpOut(HostPort):
    host: str = "127.0.0.1"
    port: Port = 2575
    version: Literal["2.3.1", "2.5", "2.5.1"] = "2.5"
    charset: Literal["UNICODE UTF-8", "8859/9", "8859/1"] = "UNICODE UTF-8"   # v2.3.1 writes UTF-8 as UNICODE
    timeout: float = Field(30.0, gt=0)
    tls: bool = False                              # MLLP over TLS (node.tls's trust list and certificate)
    # MSH-3..6 (HD: namespace^universal id^type, e.g. "NEUROPETRIX^1.2.3^ISO"); null = left empty
    sending_application: str = Field("NEUROPETRIX", min_length=1)
    sending_facility: str | None = None
    receiving_application: str | None = None
    receiving_facility: str | None = None


HL7_CHARSETS_IN = Literal["8859/9", "UNICODE UTF-8", "UTF-8", "8859/1", "ASCII"]


class MllpIn(HostPort):
    """The HL7 listener for ADT/ORM/OMG from the HBYS (node/scp/mllp_listener.py)."""

    enabled: bool = False
    host: str = "0.0.0.0"
    port: Port = 2576
    # addresses or networks (CIDR) that may connect; empty = any caller
    allowed_callers: list[str] = []
    # MSH-18 empty: the sender's charset by MSH-3 (sending application), else `default_charset`
    default_charset: HL7_CHARSETS_IN = "8859/9"
    sender_charsets: dict[str, HL7_CHARSETS_IN] = {}
    max_frame_bytes: int = Field(1 << 20, ge=1024)        # a bigger frame is refused, the connection closed
    idle_timeout: float = Field(300.0, gt=0)              # a silent connection is closed after this
    tls: bool = False                                     # TLS only on this port (node.tls's certificate)

    @field_validator("allowed_callers")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network") from None
        return value


class FhirSettings(Section):
    base_url: str = "http://127.0.0.1:8081/fhir"
    token: str | None = None
    timeout: float = Field(30.0, gt=0)


class HbysSettings(Section):
    mllp: MllpOut = MllpOut()
    mllp_listen: MllpIn = MllpIn()
    fhir: FhirSettings = FhirSettings()
    # No national OID/URI is published for the T.C. Kimlik No: each site names its own.
    patient_id_system: str = "urn:oid:2.16.792.1.2.1.1.5.1.1.1"   # site-configurable
    # Patient IDs that are not a valid T.C. Kimlik No are the hospital's record numbers (FHIR type MR):
    # the system of that namespace, never the national one.
    patient_record_system: str = "urn:neuropetrix:patient-record-number"   # site-configurable
    # With the listener on, a study that matches no order (or differs from it) waits on the reconcile
    # list and is routed only once a technologist links it or confirms it as unordered.
    hold_unmatched: bool = True
    # Modality Worklist answers: Specific Character Set per calling AE (consoles that show only Latin-5)
    worklist_charset: Literal["ISO_IR 192", "ISO_IR 148"] = "ISO_IR 192"
    worklist_charsets: dict[str, Literal["ISO_IR 192", "ISO_IR 148"]] = {}
    # ORM^O01 (v2.3.1/2.5) or OMG^O19 (v2.5.1) to hbys.mllp when images arrive (IP) and the study is complete (CM)
    order_status: bool = False


class PushSettings(Section):
    fcm_endpoint: str | None = None                # None = Google's; a URL ending in /v1/projects
    credentials_file: Path | None = None           # Google service-account JSON; None = push is off
    max_attempts: int = Field(8, ge=1, le=100)     # tries of one message (back-off: engine.retry)


class EmailSettings(Section):
    """SMTP for notification e-mail (engine/notifications.py); STARTTLS and login only when set."""

    smtp_host: str
    smtp_port: Port = 25
    sender: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    starttls: bool = False
    ca_file: Path | None = None                    # the hospital CA that signed the server's certificate;
    #                                                None = the system's trusted CAs
    username: str | None = None
    password_file: Path | None = None              # one line, the SMTP password
    timeout: float = Field(15.0, gt=0)


class SmsSettings(Section):
    """An HTTP SMS gateway: POST `body_template` to `url`; {to} and {text} are filled in, escaped for
    `content_type` (JSON string content, or form-encoded), since Turkish providers differ."""

    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = {}
    body_template: str = '{"to": "{to}", "text": "{text}"}'
    content_type: Literal["application/json", "application/x-www-form-urlencoded"] = "application/json"
    timeout: float = Field(15.0, gt=0)


class NotifySettings(Section):
    email: EmailSettings | None = None             # None = no e-mail channel
    sms: SmsSettings | None = None                 # None = no SMS channel
    # what a message may say of the patient: none (a study link only) | initials | name
    patient_data: Literal["none", "initials", "name"] = "none"
    study_link: str = ""                           # e.g. https://petct.hospital.local/#/studies/ (+ UID)
    escalate_after: float = Field(600.0, gt=0)     # seconds an urgent notification waits for its ack
    oncall: list[str] = []                         # usernames, in escalation order
    timezone: str = "Europe/Istanbul"              # users' quiet hours are in this zone
    max_attempts: int = Field(8, ge=1, le=100)     # tries of one e-mail or SMS (back-off: engine.retry)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not a time zone name, e.g. Europe/Istanbul") from None
        return value


class ApiSettings(Section):
    # HS256 key for access tokens; None = a random key generated once in <data_dir>/api_signing.key (0600).
    signing_key: str | None = Field(None, min_length=32)
    access_token_seconds: int = Field(900, ge=30, le=86400)
    refresh_token_days: float = Field(14.0, gt=0)
    # failed logins allowed per window for one account from one client address (never for an account
    # from everywhere: knowing a user name must not be enough to lock its owner out) …
    login_failures_per_account: int = Field(5, ge=1)
    login_failures_per_address: int = Field(20, ge=1)   # … and from one client address, any accounts
    login_window_seconds: float = Field(300.0, gt=0)
    # how often the event log is read for events other processes write (this process's own wake the
    # feed at once); 0.05 s cost an idle node 3% of a core
    event_poll_seconds: float = Field(0.25, gt=0, le=5)
    heartbeat_seconds: float = Field(15.0, gt=0)         # WebSocket heartbeat message interval
    https: bool = False                                  # serve the API over TLS (node.tls's certificate)
    # A connection gets this long to send a whole request's headers, and is closed after this long
    # idle between requests (slowloris, idle sockets holding file descriptors).
    idle_timeout_seconds: float = Field(15.0, gt=0, le=3600)
    body_timeout_seconds: float = Field(30.0, gt=0, le=3600)     # to receive a request's body
    # Open HTTP connections (WebSockets included); beyond it a new one is answered 503 and closed.
    max_connections: int = Field(1000, ge=1, le=100_000)
    # /readyz says not ready when the storage folder's disk has less free space than this
    readyz_min_free_mb: int = Field(512, ge=0)


class AnalysisSettings(Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    model: Path | None = None                     # site-supplied MONAI weights
    suv_type: Literal["bw", "lbm_james", "lbm_janmahasatian", "bsa", "ibw"] = "bw"
    method: Literal["fixed", "percent_max", "percist", "model"] = "fixed"
    threshold: float = Field(4.0, gt=0)           # SUV for fixed, fraction of SUVmax for percent_max
    min_volume_ml: float = Field(0.5, ge=0)
    radiomics: bool = False
    radiomics_bin_width: float = Field(0.25, gt=0)                # SUV units per grey level (IBSI fixed bin width)
    seed_threshold: float = Field(2.5, gt=0)      # percent_max: SUV that makes a region a lesion candidate
    liver_center_mm: tuple[float, float, float] | None = None    # PERCIST sphere centre (LPS mm); None = auto
    exclude_physiological: bool = True            # tracer's normal uptake (brain, bladder, …) is not a lesion

    @model_validator(mode="after")
    def _consistent(self) -> "AnalysisSettings":
        if self.method == "percent_max" and self.threshold > 1:
            raise ValueError("threshold: for method percent_max give a fraction of SUVmax (e.g. 0.41), "
                             f"not {self.threshold:g}")
        if self.method == "model" and self.model is None:
            raise ValueError("model: a weights file is required when method is model")
        return self


class Route(Section):
    """One routing rule; match operators and actions are checked by engine/routes at start-up."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    match: dict[str, Any] = {}
    actions: list[str | dict[str, Any]] = []
    transforms: list[TransformStep] = []           # applied to what this route forwards


class RetrySettings(Section):
    """Back-off per destination: base × 2^(failures-1), capped, with a random part against storms."""

    base_seconds: float = Field(10.0, gt=0)
    max_seconds: float = Field(900.0, gt=0)
    jitter: float = Field(0.3, ge=0, le=1)         # this fraction of each delay is drawn at random
    max_attempts: int = Field(12, ge=1)            # then the job is parked as failed


class EngineSettings(Section):
    workers: int = Field(4, ge=1, le=64)           # delivery threads
    lanes_per_destination: int = Field(1, ge=1, le=64)  # a dead or silent peer holds at most this many
    analysis_workers: int = Field(1, ge=0, le=16)  # analysis processes; 0 = this node never analyses
    lease_seconds: float = Field(60.0, gt=0)       # a claimed job is taken again this long after its
    poll_seconds: float = Field(0.5, gt=0)         # worker stops renewing it (a crash)
    retry: RetrySettings = RetrySettings()
    pseudonym_secret: str | None = None            # HMAC key: the same patient gets the same pseudonym;
    #                                                null = generated once into <data_dir>/pseudonym.key
    # Storage commitment: PACS answers (N-EVENT-REPORT) arrive on this port; null = not requested.
    commitment_port: Port | None = None
    commitment_tls: bool = False                   # that port takes TLS only (node.tls's certificate)
    commitment_timeout: float = Field(300.0, gt=0) # no answer by then: the objects are sent again
    analysis_timeout: float = Field(1800.0, gt=0)  # a hung analysis is stopped and tried again


class PriorsSettings(Section):
    """Where a completed PET study's earlier studies are looked for beyond what the node holds
    (engine/priors.py): a peer (the PACS) asked by C-FIND and C-MOVE to this node's AE title."""

    peer: str | None = None                        # a configured peer's name; None = held studies only
    studies: int = Field(1, ge=1, le=10)           # how many of the latest earlier PET studies to fetch
    timeout: float = Field(300.0, gt=0)            # for the C-MOVE of one study


class RetentionSettings(Section):
    """What is deleted, and when (engine/retention.py); null = kept for ever. Never deleted, whatever
    its age: a study still receiving, with a job open or parked, an unsigned review, or a prior of
    its patient's study received within `prior_days`."""

    images_days: float | None = Field(None, gt=0)   # the study's instances, after its last arrival
    results_days: float | None = Field(None, gt=0)  # the analysis results folder (SEG, SR, PDF, ...)
    prior_days: float = Field(365.0, ge=0)          # 0 = no prior protection
    sweep_seconds: float = Field(3600.0, gt=0)      # how often the engine looks for what to prune


class StorageSettings(Section):
    retention: RetentionSettings = RetentionSettings()


class SyslogSettings(HostPort):
    """An ATNA audit record repository (syslog collector) for the audit trail."""

    port: Port = 514
    protocol: Literal["udp", "tcp"] = "udp"


class AuditSettings(Section):
    syslog: SyslogSettings | None = None           # null: the trail is kept in the database only
    # reverse proxies (addresses or networks) whose X-Forwarded-For names the real client
    trusted_proxies: list[str] = []

    _networks = field_validator("trusted_proxies")(classmethod(lambda cls, v: MllpIn._networks(v)))


class Settings(Section):
    node: NodeSettings = NodeSettings()
    peers: list[Peer] = []
    hbys: HbysSettings = HbysSettings()
    push: PushSettings = PushSettings()
    notify: NotifySettings = NotifySettings()
    api: ApiSettings = ApiSettings()
    analysis: AnalysisSettings = AnalysisSettings()
    engine: EngineSettings = EngineSettings()
    priors: PriorsSettings = PriorsSettings()
    audit: AuditSettings = AuditSettings()
    storage: StorageSettings = StorageSettings()
    routes: list[Route] = []

    @model_validator(mode="after")
    def _unique_peers(self) -> "Settings":
        names = [p.name for p in self.peers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"peers: duplicate peer name(s) {', '.join(dupes)}")
        if self.priors.peer is not None and self.priors.peer not in names:
            raise ValueError(f"priors.peer: no peer named {self.priors.peer!r} "
                             f"(configured: {', '.join(names) or 'none'})")
        return self

    @model_validator(mode="after")
    def _tls_configured(self) -> "Settings":
        wanting = [f"peers[{p.name}].tls" for p in self.peers if p.tls]
        wanting += [key for key, on in (("hbys.mllp.tls", self.hbys.mllp.tls),
                                        ("hbys.mllp_listen.tls", self.hbys.mllp_listen.tls),
                                        ("api.https", self.api.https),
                                        ("engine.commitment_tls", self.engine.commitment_tls)) if on]
        if self.node.tls is None and wanting:
            raise ValueError(f"{', '.join(wanting)}: TLS needs node.tls (certificate and private_key)")
        if not self.node.plain_dicom and (self.node.tls is None or self.node.tls.port is None):
            raise ValueError("node.plain_dicom: false leaves no DICOM port; give node.tls.port")
        return self

    def peer(self, name: str) -> Peer:
        """The configured peer called `name`; KeyError names the known ones."""
        for p in self.peers:
            if p.name == name:
                return p
        raise KeyError(f"no peer named {name!r} (configured: {', '.join(p.name for p in self.peers) or 'none'})")

    def peer_by_ae(self, ae_title: str) -> Peer | None:
        return next((p for p in self.peers if p.ae_title == ae_title), None)
