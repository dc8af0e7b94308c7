"""Route notifications: whom to tell, on which channels, escalation of urgent ones nobody acknowledged,
and the e-mail and SMS jobs that carry them.

A route's `notify` action records a `notification` event (engine/executor.py). The planner turns
each into one `notifications` row per recipient (the roles and users it names) and one durable job
per channel: push (kind "push", one per device, run by push_jobs.send), e-mail (kind "email",
destination "smtp") and SMS (kind "sms", destination "sms"), all made with the cursor "notify" moved
in one transaction, so an event turns into messages once. The channels of a message are the
route's (or, without, the priority's default), narrowed to the user's own preferred channels and,
in the user's quiet hours, to e-mail; urgent overrides both. An address the channel refuses for
good is marked on the contact, recorded as `notification.undeliverable` and not used again until
it changes. An urgent notification not acknowledged within notify.escalate_after goes to the next
user of notify.oncall, recorded as `notification.escalated`.

What a message says of the patient is notify.patient_data (none: a study link only; initials; name);
push never carries any (it crosses Google), and the MIP is attached to e-mail only for a role that
may see results.

On change: a notify action's `when: {response: [PMD, …]}` tells only when the study's analysis has a
response to a prior study in one of those PERCIST categories (the notify job reads analysis.json, runs
after the analysis, and records no notification otherwise). Progression is never a routine message:
a PMD result is told at least at high priority, push included, whatever lower priority the route names.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from html import escape
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from neuropetrix.analysis.results import CATEGORIES
from neuropetrix.api.permissions import RESULTS_READ, allows
from neuropetrix.config.loader import ConfigError
from neuropetrix.config.settings import NotifySettings, Settings
from neuropetrix.engine import push_jobs
from neuropetrix.engine.clock import SYSTEM, Clock
from neuropetrix.engine.jobs import Claimed, new_job
from neuropetrix.engine.result_store import ResultStore
from neuropetrix.node.scu.email import Mail, SmtpServer, send_mail
from neuropetrix.node.scu.errors import AddressRefused
from neuropetrix.node.scu.sms import SmsGateway, send_sms
from neuropetrix.store.accounts import ROLES, Device, User
from neuropetrix.store.eventlog import EventKind, record, take_pending
from neuropetrix.store.models import Event, Patient, Study
from neuropetrix.store.notify_models import (
    ACKNOWLEDGED,
    ESCALATED,
    PRIORITIES,
    QUEUED,
    SENT,
    Contact,
    Notification,
)

log = logging.getLogger("neuropetrix.notify")

CONSUMER = "notify"
EMAIL, SMS, PUSH = "email", "sms", "push"
CHANNELS = (PUSH, EMAIL, SMS)
DESTINATIONS = {EMAIL: "smtp", SMS: "sms"}                # job kind → destination (its back-off)
JOB_KINDS = tuple(DESTINATIONS)
DEFAULT_CHANNELS = {"urgent": [PUSH, SMS, EMAIL], "high": [PUSH, EMAIL], "medium": [PUSH], "low": [EMAIL]}
FCM_PRIORITY = {"urgent": "high", "high": "high", "medium": "normal", "low": "normal"}
PROGRESSION = "PMD"                 # PERCIST progressive metabolic disease: told at least at PROGRESSION_PRIORITY
PROGRESSION_PRIORITY = "high"


@dataclass(frozen=True)
class Request:
    """What a `notification` event asks for; the plain `{notify: [roles]}` is a high-priority push."""

    roles: list[str]
    users: list[str]
    priority: str
    channels: list[str]

    @classmethod
    def of(cls, payload: dict) -> Request:
        priority = payload.get("priority", "high")
        channels = payload.get("channels") or ([PUSH] if "priority" not in payload else DEFAULT_CHANNELS[priority])
        if payload.get("response") == PROGRESSION and PRIORITIES.index(priority) > PRIORITIES.index(
                PROGRESSION_PRIORITY):
            priority, channels = PROGRESSION_PRIORITY, [PUSH, *(c for c in channels if c != PUSH)]
        return cls(list(payload.get("recipients", [])), list(payload.get("users", [])), priority, list(channels))


def unmet(when: dict, analysis: dict | None) -> str | None:
    """Why this study's analysis (analysis.json, None before one) does not meet a notify's `when`;
    None when it does (or there is no condition)."""
    wanted = when.get("response")
    if not wanted:
        return None
    response = (analysis or {}).get("response")
    if response is None:
        return "the study has no response to a prior study"
    category = response.get("category") or "not assessable"
    return None if category in wanted else f"response {category}, not {' or '.join(wanted)}"


def parse_hhmm(value: str) -> time:
    """'22:00' → time; ValueError names the expected form."""
    try:
        hours, minutes = value.split(":")
        return time(int(hours), int(minutes))
    except ValueError:
        raise ValueError(f"{value!r}: a time of day as HH:MM, e.g. 22:00") from None


def in_quiet_hours(contact: Contact | None, local: time) -> bool:
    if contact is None or not contact.quiet_from or not contact.quiet_until:
        return False
    start, end = parse_hhmm(contact.quiet_from), parse_hhmm(contact.quiet_until)
    return start <= local < end if start < end else (local >= start or local < end)


def channels_for(priority: str, wanted: list[str], contact: Contact | None, quiet: bool) -> list[str]:
    """The channels one user is told on: urgent as the route says; otherwise the user's preferences
    (when they leave any of the route's), and only e-mail in quiet hours."""
    if priority == "urgent":
        return list(wanted)
    chosen = [c for c in wanted if contact is None or not contact.channels or c in contact.channels] or list(wanted)
    return [c for c in chosen if c == EMAIL] if quiet else chosen


def patient_words(name: str, level: str) -> str:
    """The patient as a message may name them: '' (none), initials, or the name (DICOM PN → 'Given FAMILY')."""
    if level == "none" or not name:
        return ""
    family, _, given = name.split("=")[0].partition("^")
    given = given.split("^")[0]
    if level == "initials":
        return "".join(f"{part[0]}." for part in (given, family) if part)
    return " ".join(part for part in (given, family) if part)


@dataclass(frozen=True)
class Message:
    subject: str
    text: str
    html: str
    sms: str


def compose(cfg: NotifySettings, priority: str, route: str, study: Study | None, study_uid: str,
            escalated: bool, response: str | None = None) -> Message:
    """The message; `response` is the study's PERCIST category when it was compared with a prior one."""
    who = patient_words(study.patient.name if study is not None else "", cfg.patient_data)
    link = f"{cfg.study_link}{study_uid}" if cfg.study_link else f"study {study_uid}"
    what = "PET/CT study flagged" + (f": {who}" if who else "")
    head = f"[{priority.upper()}]" + (" (escalated: not acknowledged)" if escalated else "")
    lines = [f"{head} {what}", f"Rule {route} asks you to look.",
             f"Response to the prior study (PERCIST 1.0): {response} ({CATEGORIES[response]})."
             if response in CATEGORIES else "",
             f"Study date: {study.study_date}" if study is not None and study.study_date else "", link,
             "Acknowledge in the NeuroPETRIX app or dashboard."]
    text = "\n".join(line for line in lines if line)
    html = "".join(f"<p>{escape(line)}</p>" for line in lines if line and line != link)
    if cfg.study_link:
        html += f'<p><a href="{escape(link)}">Open the study</a></p>'
    return Message(f"{head} {what}", text, f"<html><body>{html}</body></html>", f"{head} {what} {link}")


class NotificationPlanner:
    """The engine's consumer of `notification` events and the escalation of unacknowledged urgent ones
    (run by the worker's routing thread)."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings, push_on: bool,
                 clock: Clock = SYSTEM) -> None:
        self.sessions = sessions
        self.settings = settings
        self.cfg = settings.notify
        self.push_on = push_on
        self.clock = clock
        self.zone = ZoneInfo(self.cfg.timezone)

    def run_once(self) -> int:
        """Notify for new events and escalate what is due; returns how many notifications were made."""
        with self.sessions.begin() as s:
            made = 0
            for e in take_pending(s, CONSUMER, (EventKind.NOTIFICATION,), 100, now=self.clock.now(),
                                  from_now=True):                 # first start: none about the past
                made += self._plan(s, e)
            return made + self._escalate(s)

    def _plan(self, s: Session, e: Event) -> int:
        request = Request.of(e.payload or {})
        users = s.scalars(select(User).where(User.disabled.is_(False),
                                             User.role.in_(request.roles) | User.username.in_(request.users))
                          .order_by(User.id)).all()
        for user in users:
            self._notify(s, e, user, request.priority, request.channels, None)
        if not users:
            log.warning("notification event %d of route %s names nobody who can be told", e.id,
                        (e.payload or {}).get("route"))
        return len(users)

    def _notify(self, s: Session, e: Event, user: User, priority: str, wanted: list[str],
                escalated_from: Notification | None) -> Notification:
        now = self.clock.now()
        contact = s.get(Contact, user.id)
        local = now.replace(tzinfo=UTC).astimezone(self.zone).time()
        route = (e.payload or {}).get("route", "")
        n = Notification(event_id=e.id, study_uid=e.study_uid or "", route=route, user_id=user.id,
                         priority=priority, channels=[], state=QUEUED, created_at=now, updated_at=now,
                         escalated_from=escalated_from.id if escalated_from else None, acked_by="",
                         escalate_at=now + timedelta(seconds=self.cfg.escalate_after)
                         if priority == "urgent" and oncall_list(s, self.cfg) else None)
        s.add(n)
        s.flush()
        study = s.scalars(select(Study).join(Patient).where(Study.study_uid == e.study_uid)).first()
        message = compose(self.cfg, priority, route, study, n.study_uid, escalated_from is not None,
                          (e.payload or {}).get("response"))
        jobs = []
        for channel in channels_for(priority, wanted, contact, in_quiet_hours(contact, local)):
            jobs += self._jobs(s, e, n, user, contact, channel, message)
        n.channels = sorted({j.params["channel"] for j in jobs})
        s.add_all(jobs)
        return n

    def _jobs(self, s: Session, e: Event, n: Notification, user: User, contact: Contact | None, channel: str,
              message: Message) -> list:
        route = f"notification:{n.id}:{channel}"
        if channel == PUSH:
            if not self.push_on:
                return []
            devices = s.execute(select(Device.id, Device.token).where(Device.user_id == user.id)).all()
            category = (e.payload or {}).get("response")
            push = (FCM_PRIORITY[n.priority], f"PET/CT study flagged ({n.priority})",
                    f"Rule {n.route} asks you to look" + (f": PERCIST {category}" if category else ""))
            return [push_jobs.device_job(e, route, device_id, token, user.id, push, self.settings.push.max_attempts,
                                         notification=n.id, channel=PUSH) for device_id, token in devices]
        if contact is None:
            return []
        params: dict = {"notification": n.id, "channel": channel, "user_id": user.id}
        if channel == EMAIL and self.cfg.email is not None and contact.email and not contact.email_failed:
            params |= {"to": contact.email, "subject": message.subject, "text": message.text,
                       "html": message.html, "mip": allows(user.role, RESULTS_READ)}
        elif channel == SMS and self.cfg.sms is not None and contact.phone and not contact.phone_failed:
            params |= {"to": contact.phone, "text": message.sms}
        else:
            return []
        return [new_job(channel, n.study_uid, route, 0, DESTINATIONS[channel], self.cfg.max_attempts,
                        source_event_id=e.id, params=params, now=self.clock.now())]

    def _escalate(self, s: Session) -> int:
        now = self.clock.now()
        due = s.scalars(select(Notification).where(Notification.state.in_((QUEUED, SENT)),
                                                   Notification.escalate_at <= now)
                        .order_by(Notification.id)).all()
        made = 0
        for n in due:
            n.state, n.escalate_at, n.updated_at = ESCALATED, None, now
            told = set(s.scalars(select(Notification.user_id).where(Notification.event_id == n.event_id)))
            current = s.get(User, n.user_id)
            oncall = oncall_list(s, self.cfg)
            start = oncall.index(current.username) + 1 if current is not None and current.username in oncall else 0
            nxt = None
            for username in oncall[start:]:
                user = s.scalars(select(User).where(User.username == username, User.disabled.is_(False))).first()
                if user is not None and user.id not in told:
                    nxt = user
                    break
            event = s.get(Event, n.event_id)
            to = None
            if nxt is not None and event is not None:
                to = self._notify(s, event, nxt, n.priority, Request.of(event.payload or {}).channels, n)
                made += 1
            else:
                log.error("urgent notification %d was not acknowledged and nobody is left on call", n.id)
            record(s, EventKind.NOTIFICATION_ESCALATED, n.study_uid or None, {
                "notification": n.id, "from": current.username if current else None,
                "to": nxt.username if nxt else None, "to_notification": to.id if to else None}, at=now)
        return made


def oncall_list(s: Session, cfg: NotifySettings) -> list[str]:
    """Usernames in escalation order: the list set from the dashboard, or else notify.oncall."""
    ranked = s.scalars(select(User.username).join(Contact, Contact.user_id == User.id)
                       .where(Contact.oncall_rank.is_not(None)).order_by(Contact.oncall_rank)).all()
    return list(ranked) or list(cfg.oncall)


def set_oncall(s: Session, usernames: list[str]) -> None:
    """The dashboard's on-call list ([] = back to notify.oncall); ValueError names an unknown user."""
    users = {u.username: u for u in s.scalars(select(User).where(User.username.in_(usernames)))}
    if missing := [name for name in usernames if name not in users]:
        raise ValueError(f"no user(s) {', '.join(missing)}")
    s.execute(update(Contact).values(oncall_rank=None))
    for rank, name in enumerate(dict.fromkeys(usernames)):
        contact = s.get(Contact, users[name].id)
        if contact is None:
            contact = Contact.blank(users[name].id)
            s.add(contact)
        contact.oncall_rank = rank
    s.flush()


def acknowledge(s: Session, notification_id: int, username: str, now: datetime) -> Notification | None:
    """Acknowledged: its escalation, and that of every notification of the same event, stops."""
    n = s.get(Notification, notification_id)
    if n is None:
        return None
    if n.state != ACKNOWLEDGED:
        n.state, n.acked_at, n.acked_by, n.updated_at = ACKNOWLEDGED, now, username, now
        s.execute(update(Notification).where(Notification.event_id == n.event_id,
                                             Notification.escalate_at.is_not(None)).values(escalate_at=None))
        record(s, EventKind.NOTIFICATION_ACKED, n.study_uid or None,
               {"notification": n.id, "by": username}, at=now)
    return n


def mark_sent(s: Session, job: Claimed, now: datetime) -> None:
    """A channel took the message: its notification is sent (unless already further on)."""
    if "notification" in job.params:
        s.execute(update(Notification).where(Notification.id == job.params["notification"],
                                             Notification.state == QUEUED).values(state=SENT, updated_at=now))


class Channels:
    """Runs e-mail and SMS jobs with the configured server and gateway."""

    def __init__(self, cfg: NotifySettings, sessions: sessionmaker[Session], results: ResultStore,
                 clock: Clock = SYSTEM) -> None:
        self.sessions = sessions
        self.results = results
        self.clock = clock
        self.smtp = self.gateway = None
        if cfg.email is not None:
            e = cfg.email
            try:
                password = e.password_file.read_text().strip() if e.password_file is not None else None
            except OSError as exc:
                raise ConfigError(f"notify.email.password_file: cannot read {e.password_file}: "
                                  f"{exc.strerror}") from None
            self.smtp = SmtpServer(e.smtp_host, e.smtp_port, e.sender, e.starttls, e.username, password, e.timeout,
                                   str(e.ca_file) if e.ca_file is not None else None)
        if cfg.sms is not None:
            self.gateway = SmsGateway(cfg.sms.url, cfg.sms.body_template, cfg.sms.content_type,
                                      dict(cfg.sms.headers), cfg.sms.timeout)

    def run(self, job: Claimed) -> dict:
        """Send one e-mail or SMS job; raises DeliveryError (AddressRefused after marking the address)."""
        p = job.params
        try:
            if job.kind == EMAIL:
                if self.smtp is None:
                    raise AddressRefused("e-mail is off on this node (notify.email is not set)")
                mip = self.results.file(job.study_uid, "mip.png") if p.get("mip") and job.study_uid else None
                png = mip.read_bytes() if mip is not None and mip.is_file() else None
                result = {"message_id": send_mail(self.smtp, Mail(p["to"], p["subject"], p["text"], p["html"], png)),
                          "mip": png is not None}
            else:
                if self.gateway is None:
                    raise AddressRefused("SMS is off on this node (notify.sms is not set)")
                result = {"gateway": send_sms(self.gateway, p["to"], p["text"])}
        except AddressRefused as exc:
            self._undeliverable(job, str(exc))
            raise
        with self.sessions.begin() as s:
            mark_sent(s, job, self.clock.now())
        return result

    def _undeliverable(self, job: Claimed, reason: str) -> None:
        log.error("notification %s: %s address of user %s refused for good: %s", job.params.get("notification"),
                  job.kind, job.params.get("user_id"), reason)
        column = Contact.email_failed if job.kind == EMAIL else Contact.phone_failed
        address = Contact.email if job.kind == EMAIL else Contact.phone
        with self.sessions.begin() as s:
            s.execute(update(Contact).where(Contact.user_id == job.params["user_id"], address == job.params["to"])
                      .values({column: reason[:500]}))
            record(s, EventKind.NOTIFICATION_UNDELIVERABLE, job.study_uid or None, {
                "notification": job.params.get("notification"), "channel": job.kind,
                "user_id": job.params.get("user_id"), "error": reason[:500]}, at=self.clock.now())


def _when(value: object) -> dict:
    """A notify's `when: {response: PMD | [PMD, SMD]}` checked."""
    if not isinstance(value, dict) or set(value) != {"response"}:
        raise ValueError("notify: when is {response: CATEGORY or [CATEGORY, …]}, e.g. {response: PMD}")
    wanted = value["response"] if isinstance(value["response"], list) else [value["response"]]
    if not wanted or (bad := [c for c in wanted if c not in CATEGORIES]):
        raise ValueError(f"notify: when.response is a PERCIST category ({', '.join(CATEGORIES)}), "
                         f"not {', '.join(map(str, bad)) if wanted else 'nothing'}")
    return {"response": list(wanted)}


def notify_params(body: dict) -> dict:
    """A route's `{notify: {roles, users, priority, channels, when}}` checked, as the notify job's params;
    ValueError says what is wrong."""
    unknown = set(body) - {"roles", "users", "priority", "channels", "when"}
    if unknown:
        raise ValueError(f"notify: unknown key(s) {', '.join(sorted(unknown))} "
                         "(roles, users, priority, channels, when)")
    roles, users = body.get("roles", []), body.get("users", [])
    for name, values in (("roles", roles), ("users", users), ("channels", body.get("channels", []))):
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValueError(f"notify: {name} is a list of names")
    if not roles and not users:
        raise ValueError("notify: name roles or users to tell, e.g. {notify: {roles: [physician]}}")
    if bad := [r for r in roles if r not in ROLES]:
        raise ValueError(f"notify: unknown role(s) {', '.join(bad)} (roles: {', '.join(ROLES)})")
    priority = body.get("priority", "high")
    if priority not in PRIORITIES:
        raise ValueError(f"notify: priority is one of {', '.join(PRIORITIES)}, not {priority!r}")
    channels = body.get("channels") or DEFAULT_CHANNELS[priority]
    if bad := [c for c in channels if c not in CHANNELS]:
        raise ValueError(f"notify: unknown channel(s) {', '.join(bad)} (channels: {', '.join(CHANNELS)})")
    return {"recipients": roles, "users": users, "priority": priority, "channels": channels,
            **({"when": _when(body["when"])} if "when" in body else {})}
