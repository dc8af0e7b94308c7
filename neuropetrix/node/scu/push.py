"""FCM push sender (HTTP v1 through pyfcm): one message to one device, and what became of it.

pyfcm has no URL parameter; its endpoint is the class attribute FCM_END_POINT_BASE, so a site (or a
test) points it elsewhere with a subclass. Credentials are a Google service-account JSON file whose
`token_uri` is where the OAuth token comes from. pyfcm's own retries (urllib3, up to ten on 502/503)
are switched off: the caller keeps retries durable and bounded.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from google.oauth2 import service_account
from pyfcm import FCMNotification
from pyfcm.errors import (
    AuthenticationError,
    FCMNotRegisteredError,
    FCMSenderIdMismatchError,
    FCMServerError,
    InvalidDataError,
)
from requests.adapters import HTTPAdapter
from requests.exceptions import RequestException

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"

SENT, UNREGISTERED, RETRY, REJECTED = "sent", "unregistered", "retry", "rejected"


@dataclass(frozen=True)
class PushOutcome:
    result: str          # sent | unregistered (drop the token) | retry (later) | rejected (never)
    detail: str = ""


@dataclass(frozen=True)
class PushMessageSpec:
    token: str
    title: str
    body: str
    data: dict[str, str]
    priority: str        # high | normal


class FcmSender:
    def __init__(self, credentials_file: Path, endpoint: str | None = None, timeout: float = 10.0) -> None:
        credentials = service_account.Credentials.from_service_account_file(str(credentials_file),
                                                                              scopes=[SCOPE])
        cls = FCMNotification
        if endpoint:
            cls = type("SiteFCMNotification", (FCMNotification,), {"FCM_END_POINT_BASE": endpoint.rstrip("/")})
        self._fcm = cls(credentials=credentials, adapter=HTTPAdapter(max_retries=0))
        self.timeout = timeout

    def send(self, msg: PushMessageSpec) -> PushOutcome:
        """Send one message; never raises for what FCM or the network answers."""
        try:
            # the property fetches or refreshes the OAuth token; failures there are transient
            self._fcm.requests_session  # noqa: B018
        except (InvalidDataError, RequestException) as exc:
            return PushOutcome(RETRY, f"cannot get an OAuth token: {exc}"[:500])
        android = {"priority": "high" if msg.priority == "high" else "normal"}
        apns = {"headers": {"apns-priority": "10" if msg.priority == "high" else "5"}}
        try:
            answer = self._fcm.notify(fcm_token=msg.token, notification_title=msg.title,
                                      notification_body=msg.body, data_payload=msg.data,
                                      android_config=android, apns_config=apns, timeout=self.timeout)
        except FCMNotRegisteredError as exc:
            return PushOutcome(UNREGISTERED, str(exc))
        except InvalidDataError as exc:     # 400: INVALID_ARGUMENT, e.g. a malformed registration token
            text = str(exc)
            gone = "registration token" in text.lower() or "UNREGISTERED" in text
            return PushOutcome(UNREGISTERED if gone else REJECTED, text[:500])
        except FCMSenderIdMismatchError as exc:
            return PushOutcome(UNREGISTERED, str(exc))   # the token belongs to another sender
        except (FCMServerError, AuthenticationError, RequestException) as exc:
            return PushOutcome(RETRY, str(exc)[:500])
        return PushOutcome(SENT, str(answer.get("name", "")))
