"""A local stand-in for Google's OAuth token endpoint and FCM HTTP v1, for push tests.

It checks what a real FCM checks that matters here: the OAuth assertion is signed by the service
account's key, every send carries the bearer token it issued, the project is right, the message names
a device token. Answers can be scripted per device token (e.g. 404 UNREGISTERED, 503 then 200).
"""
from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwt

PROJECT = "neuropetrix-test"
CLIENT_EMAIL = f"push@{PROJECT}.iam.gserviceaccount.com"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
_ERRORS = {404: ("NOT_FOUND", "UNREGISTERED"), 400: ("INVALID_ARGUMENT", "INVALID_ARGUMENT"),
           503: ("UNAVAILABLE", "UNAVAILABLE"), 500: ("INTERNAL", "INTERNAL")}


class FakeFcm:
    def __init__(self) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()).decode()
        self.public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        self.access_token = "ya29.fake-" + secrets.token_urlsafe(16)
        self.token_uri = ""
        self.answers: dict[str, list[int]] = {}      # device token → statuses to answer, in order
        self.delivered: list[dict] = []               # messages answered 200
        self.attempts: dict[str, int] = {}
        self._arrived = asyncio.Event()

    def credentials_file(self, path: Path, base_url: str) -> Path:
        self.token_uri = f"{base_url}/token"
        path.write_text(json.dumps({
            "type": "service_account", "project_id": PROJECT, "private_key_id": "k1",
            "private_key": self.private_pem, "client_email": CLIENT_EMAIL,
            "client_id": "1", "token_uri": self.token_uri}))
        return path

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        try:    # google-auth always names Google's token endpoint as the audience, whatever token_uri is
            claims = jwt.decode(str(form["assertion"]), self.public_pem, algorithms=["RS256"],
                                audience=GOOGLE_TOKEN_AUDIENCE)
        except Exception as exc:
            return web.json_response({"error": "invalid_grant", "error_description": str(exc)}, status=400)
        if claims.get("iss") != CLIENT_EMAIL or FCM_SCOPE not in claims.get("scope", "").split():
            return web.json_response({"error": "invalid_scope"}, status=400)
        return web.json_response({"access_token": self.access_token, "expires_in": 3600, "token_type": "Bearer"})

    async def _send(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.access_token}":
            return web.json_response({"error": {"code": 401, "status": "UNAUTHENTICATED"}}, status=401)
        if request.match_info["project"] != PROJECT:
            return web.json_response({"error": {"code": 403, "status": "PERMISSION_DENIED"}}, status=403)
        body = await request.json()
        message = body.get("message", {})
        token = message.get("token")
        if not token:
            return web.json_response({"error": {"code": 400, "status": "INVALID_ARGUMENT"}}, status=400)
        self.attempts[token] = self.attempts.get(token, 0) + 1
        scripted = self.answers.get(token)
        status = scripted.pop(0) if scripted else 200
        self._arrived.set()
        if status != 200:
            code, detail = _ERRORS[status]
            return web.json_response({"error": {"code": status, "status": code, "details": [
                {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": detail}]}},
                status=status)
        self.delivered.append(message)
        return web.json_response({"name": f"projects/{PROJECT}/messages/{len(self.delivered)}"})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_post("/v1/projects/{project}/messages:send", self._send)
        return app

    async def wait_for(self, condition, timeout: float = 30) -> None:
        """Until `condition()` holds (checked whenever a send arrives)."""
        async def loop() -> None:
            while not condition():
                self._arrived.clear()
                await self._arrived.wait()
        await asyncio.wait_for(loop(), timeout)
