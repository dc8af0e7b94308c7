"""`neuropetrix users add NAME --role ROLE [--display-name TEXT] [--organisation TEXT] [--email A] [--phone N]`,
`users contact NAME [--email A] [--phone N] [--quiet HH:MM-HH:MM] [--channels push,email,sms]`,
`users passwd NAME`, `users list [--json]`, `users disable NAME`.

Passwords are read from standard input (one line), or prompted twice without echo on a terminal, so
they never appear in the process list or the shell history.
"""
from __future__ import annotations

import argparse
import getpass
import json
import sys

from sqlalchemy.orm import Session

from neuropetrix.api import contacts, users
from neuropetrix.cli import CommandError, add_config_option, settings_from
from neuropetrix.store.accounts import ROLES
from neuropetrix.store.db import open_current, open_database


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("users", help="accounts of the API and dashboard")
    usub = p.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    add = usub.add_parser("add", help="create an account (password from stdin or prompted)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--display-name", default="", help="the name a signed report gives, e.g. \"Dr. Ayşe Yılmaz\"")
    add.add_argument("--organisation", default="", help="the signer's organisation in a signed report")
    contact = usub.add_parser("contact", help="e-mail, phone, quiet hours and channels of notifications")
    contact.add_argument("name")
    for q in (add, contact):
        q.add_argument("--email", help="notification e-mail address")
        q.add_argument("--phone", help="SMS number with country code, e.g. +905321234567")
    contact.add_argument("--quiet", metavar="HH:MM-HH:MM", help="quiet hours (only urgent is pushed or texted); "
                         "'' for none")
    contact.add_argument("--channels", help="preferred channels, e.g. push,email ('' = as the route says)")
    passwd = usub.add_parser("passwd", help="set a new password (logs the user out everywhere)")
    passwd.add_argument("name")
    lst = usub.add_parser("list", help="list accounts")
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    disable = usub.add_parser("disable", help="disable an account and revoke its sessions")
    disable.add_argument("name")
    for q in (add, contact, passwd, lst, disable):
        add_config_option(q)
    add.set_defaults(handler=_add)
    contact.set_defaults(handler=_contact)
    passwd.set_defaults(handler=_passwd)
    lst.set_defaults(handler=_list)
    disable.set_defaults(handler=_disable)


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise CommandError("the passwords differ")
        return first
    line = sys.stdin.readline()
    if not line:
        raise CommandError("no password on standard input")
    return line.rstrip("\r\n")


def _in_transaction(args: argparse.Namespace, fn, *fargs, read_only: bool = False):
    _, sessions = (open_current if read_only else open_database)(settings_from(args).node.db_url)
    try:
        with sessions.begin() as s:
            return fn(s, *fargs)
    except users.AccountError as exc:
        raise CommandError(str(exc)) from None


def _contact_fields(args: argparse.Namespace) -> dict:
    fields = {k: getattr(args, k) for k in ("email", "phone") if getattr(args, k, None) is not None}
    if getattr(args, "quiet", None) is not None:
        start, _, end = args.quiet.partition("-")
        fields |= {"quiet_from": start, "quiet_until": end}
    if getattr(args, "channels", None) is not None:
        fields["channels"] = [c.strip() for c in args.channels.split(",") if c.strip()]
    return fields


def _add(args: argparse.Namespace) -> int:
    def add(s: Session, *fargs: str) -> users.UserInfo:
        info = users.add_user(s, *fargs)
        if fields := _contact_fields(args):
            contacts.set_contact_of(s, info.username, **fields)
        return info
    info = _in_transaction(args, add, args.name, _read_password(), args.role, args.display_name,
                           args.organisation)
    print(f"user {info.username} added with role {info.role}")
    return 0


def _contact(args: argparse.Namespace) -> int:
    fields = _contact_fields(args)
    shown = _in_transaction(args, lambda s: contacts.set_contact_of(s, args.name, **fields))
    print(json.dumps(shown, indent=2))
    return 0


def _passwd(args: argparse.Namespace) -> int:
    _in_transaction(args, users.set_password, args.name, _read_password())
    print(f"password of {args.name} changed; its sessions are revoked")
    return 0


def _disable(args: argparse.Namespace) -> int:
    _in_transaction(args, users.update_user, args.name, None, True)
    print(f"user {args.name} disabled; its sessions are revoked")
    return 0


def _list(args: argparse.Namespace) -> int:
    rows = _in_transaction(args, users.list_users, read_only=True)
    if args.json:
        print(json.dumps([u.to_json() for u in rows], indent=2))
        return 0
    print(f"{'USER':<24} {'ROLE':<13} {'STATE':<9} LAST LOGIN (UTC)")
    for u in rows:
        last = u.last_login_at.strftime("%Y-%m-%d %H:%M") if u.last_login_at else "-"
        print(f"{u.username:<24} {u.role:<13} {'disabled' if u.disabled else 'active':<9} {last}")
    return 0
