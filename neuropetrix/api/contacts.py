"""How a user is reached: e-mail, phone, quiet hours and preferred channels (`user_contacts`) —
shared by `neuropetrix users add/contact` and `PUT /api/me/contact`. Setting an address again clears
its refused-for-good mark (engine/notifications.py): the user has given a new or fixed one."""
from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from neuropetrix.api.users import AccountError
from neuropetrix.engine.notifications import CHANNELS, parse_hhmm
from neuropetrix.store.accounts import User
from neuropetrix.store.notify_models import Contact

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
_PHONE = re.compile(r"^\+?[0-9]{7,15}$")          # E.164 digits, e.g. +905321234567
FIELDS = ("email", "phone", "quiet_from", "quiet_until", "channels")


def contact_json(c: Contact | None) -> dict:
    if c is None:
        return {"email": "", "phone": "", "quiet_from": "", "quiet_until": "", "channels": [],
                "email_failed": "", "phone_failed": ""}
    return {"email": c.email, "phone": c.phone, "quiet_from": c.quiet_from, "quiet_until": c.quiet_until,
            "channels": list(c.channels), "email_failed": c.email_failed, "phone_failed": c.phone_failed}


def _checked(name: str, value: object) -> object:
    if name == "channels":
        if not isinstance(value, list) or any(v not in CHANNELS for v in value):
            raise AccountError(f"channels: a list of {', '.join(CHANNELS)}")
        return list(dict.fromkeys(value))
    if not isinstance(value, str):
        raise AccountError(f"{name}: a string")
    value = value.strip()
    if not value:
        return ""
    if name == "email" and not _EMAIL.match(value):
        raise AccountError(f"email: {value!r} is not an e-mail address")
    if name == "phone":
        value = re.sub(r"[\s()-]", "", value)
        if not _PHONE.match(value):
            raise AccountError("phone: digits with the country code, e.g. +905321234567")
    if name in ("quiet_from", "quiet_until"):
        try:
            value = parse_hhmm(value).strftime("%H:%M")
        except ValueError as exc:
            raise AccountError(f"{name}: {exc}") from None
    return value


def set_contact(s: Session, user: User, **fields: object) -> dict:
    """Change the given fields of `user`'s contact; AccountError names a bad one."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise AccountError(f"unknown contact field(s) {', '.join(sorted(unknown))} ({', '.join(FIELDS)})")
    values = {name: _checked(name, value) for name, value in fields.items()}
    c = s.get(Contact, user.id)
    if c is None:
        c = Contact.blank(user.id)
        s.add(c)
    if bool(values.get("quiet_from", c.quiet_from)) != bool(values.get("quiet_until", c.quiet_until)):
        raise AccountError("quiet hours: give both quiet_from and quiet_until (HH:MM), or neither")
    for name, value in values.items():
        if name in ("email", "phone") and value != getattr(c, name):
            setattr(c, f"{name}_failed", "")
        setattr(c, name, value)
    s.flush()
    return contact_json(c)


def set_contact_of(s: Session, username: str, **fields: object) -> dict:
    user = s.scalars(select(User).where(User.username == username)).first()
    if user is None:
        raise AccountError(f"no user {username!r}")
    return set_contact(s, user, **fields)
