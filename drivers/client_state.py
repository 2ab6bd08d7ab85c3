"""The two state machines of a client association, as tables (the way h11's _state.py does it).

The association machine is where the association stands (AARQ sent, HLS pass 3 due, up,
released); the request machine is which request awaits its reply. Each moves only through
`Machine.go`, which refuses any (state, event) pair the table does not list, so a call the
protocol does not allow fails at once with the state it was made in, instead of sending bytes
the meter would refuse or silently reading a reply as the answer to something else."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Generic, TypeVar

from cosem_objects.errors import ProtocolError

__all__ = [
    "ASSOCIATION_TRANSITIONS",
    "REQUEST_TRANSITIONS",
    "AssociationEvent",
    "AssociationState",
    "LocalProtocolError",
    "Machine",
    "Pending",
    "RequestEvent",
]


class LocalProtocolError(ProtocolError):
    """We, not the meter, broke the rules: a call the association's state does not allow."""


class _Step(enum.Enum):
    """An enum hashed by identity (its members are singletons anyway): the table lookups on
    every request then stay in C instead of calling Enum.__hash__ twice per step."""

    __hash__ = object.__hash__


class AssociationState(_Step):
    IDLE = "idle"
    AWAITING_AARE = "awaiting-aare"
    AWAITING_HLS_REPLY = "awaiting-hls-reply"
    ASSOCIATED = "associated"
    AWAITING_RLRE = "awaiting-rlre"
    RELEASED = "released"


class AssociationEvent(_Step):
    SEND_AARQ = "send-aarq"
    RECEIVE_AARE = "receive-aare"
    AARE_ACCEPTED = "aare-accepted"
    HLS_CHALLENGED = "hls-challenged"  # accepted, but HLS pass 3 and 4 still to go
    REFUSED = "refused"  # AARE refused or unusable, or the HLS exchange failed
    SEND_HLS_REPLY = "send-hls-reply"
    HLS_VERIFIED = "hls-verified"
    SEND_REQUEST = "send-request"
    SEND_RLRQ = "send-rlrq"
    RECEIVE_RLRE = "receive-rlre"


_A = AssociationState
_AE = AssociationEvent

# Self-loops say where an event may happen without moving the association (a GET, the AARE
# being read before its outcome is known).
ASSOCIATION_TRANSITIONS: Mapping[tuple[AssociationState, AssociationEvent], AssociationState] = {
    (_A.IDLE, _AE.SEND_AARQ): _A.AWAITING_AARE,
    (_A.AWAITING_AARE, _AE.RECEIVE_AARE): _A.AWAITING_AARE,
    (_A.AWAITING_AARE, _AE.AARE_ACCEPTED): _A.ASSOCIATED,
    (_A.AWAITING_AARE, _AE.HLS_CHALLENGED): _A.AWAITING_HLS_REPLY,
    (_A.AWAITING_AARE, _AE.REFUSED): _A.IDLE,
    (_A.AWAITING_HLS_REPLY, _AE.SEND_HLS_REPLY): _A.AWAITING_HLS_REPLY,
    (_A.AWAITING_HLS_REPLY, _AE.HLS_VERIFIED): _A.ASSOCIATED,
    (_A.AWAITING_HLS_REPLY, _AE.REFUSED): _A.IDLE,
    (_A.ASSOCIATED, _AE.SEND_REQUEST): _A.ASSOCIATED,
    (_A.ASSOCIATED, _AE.SEND_RLRQ): _A.AWAITING_RLRE,
    (_A.AWAITING_RLRE, _AE.RECEIVE_RLRE): _A.RELEASED,
}


class Pending(_Step):
    """The request whose reply the core expects next; it decides how that reply is read."""

    NONE = "none"
    GET = "get"
    GET_LIST = "get-with-list"
    SET = "set"
    ACTION = "action"
    HLS_REPLY = "hls-reply"


class RequestEvent(_Step):
    SEND_GET = "send-get"
    SEND_GET_LIST = "send-get-with-list"
    SEND_SET = "send-set"
    SEND_ACTION = "send-action"
    SEND_HLS_REPLY = "send-hls-reply"
    ENDED = "ended"  # the last reply came: a result, a refusal, or one that breaks the exchange
    ABANDONED = "abandoned"  # a new request starts; the caller gave up on this one (timeout)


_P = Pending
_RE = RequestEvent

REQUEST_TRANSITIONS: Mapping[tuple[Pending, RequestEvent], Pending] = {
    (_P.NONE, _RE.SEND_GET): _P.GET,
    (_P.NONE, _RE.SEND_GET_LIST): _P.GET_LIST,
    (_P.NONE, _RE.SEND_SET): _P.SET,
    (_P.NONE, _RE.SEND_ACTION): _P.ACTION,
    (_P.NONE, _RE.SEND_HLS_REPLY): _P.HLS_REPLY,
    (_P.GET, _RE.ENDED): _P.NONE,
    (_P.GET_LIST, _RE.ENDED): _P.NONE,
    (_P.SET, _RE.ENDED): _P.NONE,
    (_P.ACTION, _RE.ENDED): _P.NONE,
    (_P.HLS_REPLY, _RE.ENDED): _P.NONE,
    (_P.GET, _RE.ABANDONED): _P.NONE,
    (_P.GET_LIST, _RE.ABANDONED): _P.NONE,
    (_P.SET, _RE.ABANDONED): _P.NONE,
    (_P.ACTION, _RE.ABANDONED): _P.NONE,
    (_P.HLS_REPLY, _RE.ABANDONED): _P.NONE,
}

S = TypeVar("S", bound=enum.Enum)
E = TypeVar("E", bound=enum.Enum)


class Machine(Generic[S, E]):
    """One state and the table it moves along; `go` is the only way the state changes."""

    __slots__ = ("_name", "_state", "_table")

    def __init__(self, name: str, table: Mapping[tuple[S, E], S], start: S) -> None:
        self._name = name
        self._table = table
        self._state = start

    @property
    def state(self) -> S:
        return self._state

    def check(self, event: E) -> None:
        """Fail as `go` would, without moving: for a call that may still fail before its step."""
        if (self._state, event) not in self._table:
            raise self._illegal(event)

    def go(self, event: E) -> S:
        """Move on `event`; LocalProtocolError, and no move, when the table has no such step."""
        try:
            self._state = self._table[self._state, event]
        except KeyError:
            raise self._illegal(event) from None
        return self._state

    def _illegal(self, event: E) -> LocalProtocolError:
        expected = " or ".join(
            sorted({str(state.value) for state, on in self._table if on is event})
        )
        return LocalProtocolError(
            f"{self._name} is {self._state.value}, expected {expected} for {event.value}"
        )
