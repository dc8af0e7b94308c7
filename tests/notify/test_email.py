"""E-mail through a real local SMTP server (aiosmtpd), parsed as a mail client would: text and HTML,
the MIP attached only for a role that may see results, no patient name by default, login, a refused
address marked and reported once, an unreachable server retried with back-off until it answers."""
from __future__ import annotations

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import select

from neuropetrix.store.jobs_models import Job
from neuropetrix.store.models import Event
from neuropetrix.store.notify_models import Contact
from tests.notify.conftest import hospital_ca, notifications, notify_event, set_contact, until
from tests.support.nodeproc import free_port

pytestmark = pytest.mark.asyncio
UID = "1.2.826.0.1.3680043.10.18.1"
LINK = "https://petct.hastane.local/#/studies/"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def _jobs(env, kind: str = "email") -> list[Job]:
    with env.sessions() as s:
        return list(s.scalars(select(Job).where(Job.kind == kind).order_by(Job.id)))


def _study(env) -> None:
    env.add_instance(UID, patient_name="YILMAZ^AYSE", study_date="20261201", patient_id="12345678901")
    mip = env.settings.node.data_dir / "results" / UID / "mip.png"
    mip.parent.mkdir(parents=True)
    mip.write_bytes(PNG)


async def test_mail_in_text_and_html_with_the_mip_only_for_roles_that_see_results(notify_env, smtp_server, running):
    inbox, port = smtp_server()
    env = notify_env({"email": {"smtp_host": "127.0.0.1", "smtp_port": port, "sender": "petct@hastane.local"},
                      "study_link": LINK})
    _study(env)
    set_contact(env, "physician", email="ayse.hekim@hastane.local")
    set_contact(env, "viewer", email="sekreter@hastane.local")
    running(env)
    notify_event(env, UID, roles=["physician", "viewer"], priority="high", channels=["email"])
    await until(lambda: len(inbox.messages) == 2)
    mails = {m["To"]: (envelope, m) for envelope, m in inbox.messages}
    envelope, physician = mails["ayse.hekim@hastane.local"]
    assert envelope.mail_from == "petct@hastane.local" and envelope.rcpt_tos == ["ayse.hekim@hastane.local"]
    assert physician["Subject"] == "[HIGH] PET/CT study flagged"
    text = physician.get_body(("plain",)).get_content()
    html = physician.get_body(("html",)).get_content()
    assert f"{LINK}{UID}" in text and "Rule urgent-finding asks you to look." in text
    assert f'<a href="{LINK}{UID}">' in html
    [attachment] = list(physician.iter_attachments())
    assert attachment.get_filename() == "mip.png" and attachment.get_content_type() == "image/png"
    assert attachment.get_content() == PNG
    _, viewer = mails["sekreter@hastane.local"]
    assert list(viewer.iter_attachments()) == []              # viewers may not see results
    for _, m in inbox.messages:                              # default level: no patient name or id
        raw = m.as_string()
        assert "YILMAZ" not in raw and "AYSE" not in raw.upper().replace("AYSE.HEKIM", "") and "12345678901" not in raw
    await until(lambda: [n.state for n in notifications(env)] == ["sent", "sent"])
    await until(lambda: [j.state for j in _jobs(env)] == ["done", "done"])
    assert [(j.destination, j.state, j.result["mip"]) for j in _jobs(env)] == [("smtp", "done", True),
                                                                            ("smtp", "done", False)]


async def test_login_with_the_password_file(notify_env, smtp_server, running, tmp_path):
    seen = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        seen.append((mechanism, auth_data))
        ok = isinstance(auth_data, LoginPassword) and auth_data == LoginPassword(b"petct", b"s3cret-Parola")
        return AuthResult(success=ok)

    inbox, port = smtp_server(authenticator=authenticator, auth_required=True, auth_require_tls=False)
    (tmp_path / "smtp.pw").write_text("s3cret-Parola\n")
    env = notify_env({"email": {"smtp_host": "127.0.0.1", "smtp_port": port, "sender": "petct@hastane.local",
                                "username": "petct", "password_file": str(tmp_path / "smtp.pw")}})
    set_contact(env, "physician", email="ayse.hekim@hastane.local")
    running(env)
    notify_event(env, UID, users=["physician"], priority="low")       # low: e-mail by default
    await until(lambda: len(inbox.messages) == 1)
    assert seen and seen[-1][1] == LoginPassword(b"petct", b"s3cret-Parola")
    assert inbox.messages[0][1]["Subject"] == "[LOW] PET/CT study flagged"


async def test_starttls_with_the_hospital_ca_and_login(notify_env, smtp_server, running, tmp_path):
    ca_file, context = hospital_ca(tmp_path)
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append((session.ssl is not None, auth_data))
        return AuthResult(success=auth_data == LoginPassword(b"petct", b"s3cret-Parola"))

    inbox, port = smtp_server(tls_context=context, require_starttls=True, authenticator=authenticator,
                              auth_required=True)
    (tmp_path / "smtp.pw").write_text("s3cret-Parola\n")
    email = {"smtp_host": "127.0.0.1", "smtp_port": port, "sender": "petct@hastane.local", "starttls": True,
             "ca_file": str(ca_file), "username": "petct", "password_file": str(tmp_path / "smtp.pw")}
    env = notify_env({"email": email})
    set_contact(env, "physician", email="ayse.hekim@hastane.local")
    running(env)
    notify_event(env, UID, users=["physician"], priority="low")
    await until(lambda: len(inbox.messages) == 1)
    assert logins == [(True, LoginPassword(b"petct", b"s3cret-Parola"))]      # logged in over TLS only


async def test_an_untrusted_certificate_is_refused_not_retried(notify_env, smtp_server, running, tmp_path):
    _, context = hospital_ca(tmp_path)
    inbox, port = smtp_server(tls_context=context, require_starttls=True)
    env = notify_env({"email": {"smtp_host": "127.0.0.1", "smtp_port": port, "sender": "petct@hastane.local",
                                "starttls": True}})             # the system's CAs do not know the hospital's
    set_contact(env, "physician", email="ayse.hekim@hastane.local")
    running(env)
    notify_event(env, UID, users=["physician"], priority="low")
    await until(lambda: _jobs(env) and _jobs(env)[0].state == "failed")
    assert "certificate is not trusted" in _jobs(env)[0].last_error and _jobs(env)[0].attempts == 1
    assert inbox.messages == []


async def test_a_refused_address_is_marked_reported_and_not_used_again(notify_env, smtp_server, running):
    inbox, port = smtp_server()
    inbox.refuse.add("gone@hastane.local")
    env = notify_env({"email": {"smtp_host": "127.0.0.1", "smtp_port": port, "sender": "petct@hastane.local"}})
    set_contact(env, "physician", email="gone@hastane.local")
    set_contact(env, "technologist", email="tekniker@hastane.local")
    worker = running(env)
    notify_event(env, UID, roles=["physician", "technologist"], priority="high", channels=["email"])
    await until(lambda: sorted(j.state for j in _jobs(env)) == ["done", "failed"])
    failed = next(j for j in _jobs(env) if j.state == "failed")
    assert failed.attempts == 1 and "550" in failed.last_error        # permanent: not retried
    assert [m["To"] for _, m in inbox.messages] == ["tekniker@hastane.local"]
    with env.sessions() as s:
        contact = s.get(Contact, failed.params["user_id"])
        assert "550" in contact.email_failed
        [reported] = s.scalars(select(Event).where(Event.kind == "notification.undeliverable")).all()
        assert reported.payload["channel"] == "email" and reported.payload["user_id"] == contact.user_id
    notify_event(env, UID, roles=["physician", "technologist"], priority="high", channels=["email"])
    await until(lambda: len(inbox.messages) == 2)
    worker.notifications.run_once()
    assert len(_jobs(env)) == 3                    # the marked address is not tried again
    set_contact(env, "physician", email="ayse.hekim@hastane.local")      # a new address clears the mark
    with env.sessions() as s:
        assert s.get(Contact, failed.params["user_id"]).email_failed == ""


async def test_an_unreachable_server_is_retried_with_back_off_until_it_answers(notify_env, smtp_server, running):
    port = free_port()
    env = notify_env({"email": {"smtp_host": "127.0.0.1", "smtp_port": port, "sender": "petct@hastane.local"}})
    set_contact(env, "physician", email="ayse.hekim@hastane.local")
    running(env)
    notify_event(env, UID, users=["physician"], priority="high", channels=["email"])
    await until(lambda: _jobs(env) and _jobs(env)[0].attempts >= 2)
    job = _jobs(env)[0]
    assert job.state in ("queued", "running") and "Connection refused" in job.last_error
    inbox, _ = smtp_server(port=port)
    await until(lambda: len(inbox.messages) == 1)
    await until(lambda: _jobs(env)[0].state == "done")
    assert notifications(env)[0].state == "sent"
