"""FHIR client: POST a transaction Bundle to the server's base URL and check every entry's outcome.

2xx with every entry 2xx is success. 429 and 503 are retried after the server's Retry-After (seconds
or an HTTP date); 408 and other 5xx are retried with our own back-off. Other 4xx mean this request will
be refused again (bad bundle, no permission): permanent, parked for an operator with the
OperationOutcome's text. The bearer token, when configured, goes in Authorization. The timeout bounds
the whole exchange (aiohttp's total timeout: connect, request, status, headers and body), so a server
that trickles its answer is given up on.
"""
from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiohttp

from neuropetrix.node.scu.errors import DeliveryError

log = logging.getLogger("neuropetrix.scu.fhir")
FHIR_JSON = "application/fhir+json"
RETRYABLE = {408, 425, 429, 500, 502, 503, 504}


def retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _outcome_text(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return body[:300].decode("utf-8", "replace")
    if isinstance(doc, dict) and doc.get("resourceType") == "OperationOutcome":
        return "; ".join(i.get("diagnostics") or i.get("details", {}).get("text", "") or i.get("code", "")
                         for i in doc.get("issue", []))
    return json.dumps(doc)[:300]


async def _post(url: str, bundle: bytes, headers: dict[str, str], timeout: float) -> tuple[int, str, str, bytes]:
    """(status, reason, Retry-After, body), all of it within `timeout` seconds."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http, \
            http.post(url, data=bundle, headers=headers) as response:
        return response.status, response.reason or "", response.headers.get("Retry-After", ""), await response.read()


def post_bundle(base_url: str, bundle: bytes, token: str | None, timeout: float) -> dict:
    """POST a transaction bundle; returns the transaction-response Bundle, or DeliveryError. Called
    from a worker thread (it runs its own event loop)."""
    headers = {"Content-Type": f"{FHIR_JSON}; charset=utf-8", "Accept": FHIR_JSON,
               **({"Authorization": f"Bearer {token}"} if token else {})}
    try:
        status, reason, retry_after, body = asyncio.run(_post(base_url.rstrip("/"), bundle, headers, timeout))
    except TimeoutError:
        raise DeliveryError(f"FHIR {base_url}: no complete answer within {timeout:g} s") from None
    except aiohttp.ClientConnectorError as exc:
        raise DeliveryError(f"FHIR {base_url}: {exc.os_error.strerror or exc.os_error}") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise DeliveryError(f"FHIR {base_url}: {type(exc).__name__}: {exc}") from None
    if status >= 300:
        message = f"FHIR {base_url}: HTTP {status} {reason}: {_outcome_text(body)}".rstrip(": ")
        if status in RETRYABLE:
            wait = retry_after_seconds(retry_after) if status in (429, 503) else None
            raise DeliveryError(message, retry_after=wait) from None
        raise DeliveryError(message, permanent=True) from None
    try:
        answer = json.loads(body)
    except ValueError:
        raise DeliveryError(f"FHIR {base_url}: the answer is not JSON: {body[:200]!r}") from None
    if not isinstance(answer, dict) or answer.get("resourceType") != "Bundle":
        raise DeliveryError(f"FHIR {base_url}: the answer is not a Bundle")
    refused = [(e.get("response") or {}).get("status", "?") for e in answer.get("entry", [])
               if not str((e.get("response") or {}).get("status", "")).startswith("2")]
    if refused:
        raise DeliveryError(f"FHIR {base_url}: {len(refused)} entr(ies) not accepted: {', '.join(refused)}",
                            permanent=True)
    return answer
