"""SMS through a site's HTTP gateway: POST a body template with {to} and {text} filled in.

Turkish SMS providers differ in URL, auth header and body, so all three are configuration. Values
are escaped for the body's content type (inside a JSON string, or form-encoded). 2xx is sent; 429
and 503 are retried after Retry-After, other 5xx and unreachable gateways with our back-off; 400,
404 and 422 mean the gateway refused the number (AddressRefused); other 4xx (401, 403: our
credentials) are permanent for the message.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from neuropetrix.node.scu.errors import AddressRefused, DeliveryError
from neuropetrix.node.scu.fhir import RETRYABLE, retry_after_seconds

JSON = "application/json"
NUMBER_REFUSED = {400, 404, 422}


@dataclass(frozen=True)
class SmsGateway:
    url: str
    body_template: str
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 15.0


def body(gateway: SmsGateway, to: str, text: str) -> bytes:
    def escape(value: str) -> str:
        return json.dumps(value, ensure_ascii=False)[1:-1] if gateway.content_type == JSON \
            else urllib.parse.quote_plus(value)
    return gateway.body_template.replace("{to}", escape(to)).replace("{text}", escape(text)).encode()


def send_sms(gateway: SmsGateway, to: str, text: str) -> str:
    """Send one SMS; returns the gateway's answer (its first 200 characters)."""
    request = urllib.request.Request(gateway.url, data=body(gateway, to, text), method="POST",
                                     headers={"Content-Type": f"{gateway.content_type}; charset=utf-8",
                                              **gateway.headers})
    try:
        with urllib.request.urlopen(request, timeout=gateway.timeout) as answer:
            return answer.read(200).decode(errors="replace")
    except urllib.error.HTTPError as exc:
        detail = f"SMS gateway {exc.code}: {exc.read(200).decode(errors='replace')}"
        if exc.code in NUMBER_REFUSED:
            raise AddressRefused(detail) from None
        raise DeliveryError(detail, permanent=exc.code not in RETRYABLE,
                            retry_after=retry_after_seconds(exc.headers.get("Retry-After"))) from None
    except (urllib.error.URLError, OSError) as exc:
        raise DeliveryError(f"SMS gateway unreachable: {exc}") from None
