"""Notification e-mail over SMTP (stdlib smtplib): plain text and HTML, an optional PNG attached.

STARTTLS and login are used only when configured. What SMTP answers decides the retry: a recipient
refused with a 5xx is that address's fault (AddressRefused: mark it, never retry); any other 5xx
means this message will be refused again (permanent); 4xx, timeouts and refused connections are
the server's passing trouble (retried with the queue's back-off).
"""
from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid

from neuropetrix.node.scu.errors import AddressRefused, DeliveryError


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    text: str
    html: str
    png: bytes | None = None          # attached as mip.png
    png_name: str = "mip.png"


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    sender: str
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    timeout: float = 15.0
    ca_file: str | None = None        # trusted for the server's certificate instead of the system's CAs


def compose(mail: Mail, sender: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, mail.to, mail.subject
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2])
    msg.set_content(mail.text)
    msg.add_alternative(mail.html, subtype="html")
    if mail.png is not None:
        msg.add_attachment(mail.png, maintype="image", subtype="png", filename=mail.png_name)
    return msg


def send_mail(server: SmtpServer, mail: Mail) -> str:
    """Send one message; returns its Message-ID, or raises DeliveryError / AddressRefused."""
    msg = compose(mail, server.sender)
    try:
        with smtplib.SMTP(server.host, server.port, timeout=server.timeout) as smtp:
            if server.starttls:
                smtp.starttls(context=ssl.create_default_context(cafile=server.ca_file))
            if server.username:
                smtp.login(server.username, server.password or "")
            smtp.send_message(msg)
    except smtplib.SMTPRecipientsRefused as exc:
        code, reason = next(iter(exc.recipients.values()))
        text = f"SMTP refused {mail.to}: {code} {reason.decode(errors='replace')}"
        if code >= 500:
            raise AddressRefused(text) from None
        raise DeliveryError(text) from None
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryError(f"SMTP login refused: {exc.smtp_code}", permanent=True) from None
    except smtplib.SMTPResponseException as exc:
        raise DeliveryError(f"SMTP {exc.smtp_code} {exc.smtp_error.decode(errors='replace')}",
                            permanent=exc.smtp_code >= 500) from None
    except smtplib.SMTPNotSupportedError:
        raise DeliveryError(f"SMTP {server.host}:{server.port} does not offer STARTTLS (notify.email.starttls)",
                            permanent=True) from None
    except ssl.SSLCertVerificationError as exc:
        raise DeliveryError(f"SMTP {server.host}: its certificate is not trusted: {exc.verify_message}",
                            permanent=True) from None
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"SMTP {server.host}:{server.port}: {type(exc).__name__}: {exc}") from None
    return str(msg["Message-ID"])
