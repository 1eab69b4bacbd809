"""Sessions of the console: who signed in, and the CSRF token of each browser.

Every browser gets a session (an opaque random id in an HttpOnly, SameSite=Strict
cookie) and a CSRF token bound to it, which every form carries. A change needs a
session that signed in with the API token and the form's CSRF token; the API token
itself is compared in constant time and never stored in the session, rendered or
logged. Sessions live in memory (a console restart signs everyone out), bounded in
number and age.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict

import msgspec

COOKIE = "cdb_console"
MAX_SESSIONS = 10_000
MAX_AGE_S = 8 * 3600.0


class Session(msgspec.Struct, kw_only=True):
    id: str
    csrf: str
    created: float
    signed_in: bool = False


class Sessions:
    """The sessions of one console process."""

    def __init__(self, api_token: str | None, *, max_sessions: int = MAX_SESSIONS,
                 max_age: float = MAX_AGE_S) -> None:
        self._token = api_token
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self.max_sessions = max_sessions
        self.max_age = max_age

    @property
    def sign_in_possible(self) -> bool:
        return bool(self._token)

    def get(self, session_id: str | None) -> Session | None:
        """The live session with this id, or None."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None or time.monotonic() - session.created > self.max_age:
            self._sessions.pop(session_id, None)
            return None
        return session

    def new(self) -> Session:
        session = Session(id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32),
                          created=time.monotonic())
        self._sessions[session.id] = session
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        return session

    def sign_in(self, session: Session, token: str) -> Session | None:
        """A new signed-in session (a fresh id: no fixation) when ``token`` is right."""
        if not self._token or not hmac.compare_digest(token.encode(), self._token.encode()):
            return None
        self._sessions.pop(session.id, None)
        fresh = self.new()
        fresh.signed_in = True
        return fresh

    def sign_out(self, session: Session) -> None:
        self._sessions.pop(session.id, None)


def csrf_ok(session: Session | None, given: str) -> bool:
    return session is not None and bool(given) and hmac.compare_digest(
        given.encode(), session.csrf.encode())
