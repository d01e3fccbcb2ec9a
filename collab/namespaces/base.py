"""The namespace plug-in interface and the registry that maps feed ids to plug-ins."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ..access import Access
from ..events import Event, Record, namespace_of

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class Admission:
    """What the sequencing relay knows when it admits an event, so ``validate`` stays pure.

    ``now`` is the ``rtime`` the record will carry if the event is accepted (deadlines are
    judged on it, never on the author's ``ts``); ``relay`` is the key that will sign the
    receipt, the authority for relay-signed kinds (awards, ledger moves, ``task.stalled``).
    A replayer builds the same value from a record: ``Admission.of(record)``.

    ``scratch`` belongs to one batch (:meth:`collab.feedcore.FeedCore.seal` makes one
    Admission per batch): a namespace whose state is folded only after the batch is stored
    (docs) keeps there what the events it accepted earlier in the batch will add, so a bound
    holds over the whole batch (the doc namespace's pending updates).
    """

    now: int
    relay: str
    scratch: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, record: Record) -> Admission:
        return cls(record.rtime, record.relay)


class Namespace(ABC, Generic[S]):
    """A deterministic state machine over one feed's records.

    ``validate`` raises :class:`collab.errors.InvalidEvent` (or a subclass, or ``Unauthorized``)
    to refuse an event; it must not mutate ``state``; ``adm`` says when and by which relay the
    event would be sequenced. ``apply`` folds a sequenced record into the state and
    returns the new state (it may update mutable state in place and return it).
    Control kinds (``feed.policy``, ``acl.*``) are handled by the core and never reach here.
    """

    name: str = ""
    #: access policy of a feed whose first event is not ``feed.policy``
    default_policy: str = "signed"
    #: kinds this namespace accepts; empty means any kind
    kinds: frozenset[str] = frozenset()
    #: True when ``apply`` returns a new value and leaves its input alone. The relay then
    #: folds each event of a batch tentatively so later events in the same batch are
    #: validated against it. A mutable state (a pycrdt Doc) must validate independently.
    immutable_state: bool = True
    #: The relay owns this namespace's feeds (shared coordination feeds: ``ledger/``, ``vouch/``):
    #: their first record must be the relay's, so an agent's event is never seq 1
    #: (``unauthorized``, :func:`collab.feedcore.admit`) and nobody can squat a shared feed with a
    #: policy or owner of their own. The relay opens such a feed itself, with its opening event,
    #: in the same append as the first event it accepts there (:meth:`collab.feedcore.FeedCore.seal`).
    relay_owned: bool = False

    @abstractmethod
    def initial(self, feed: str) -> S: ...

    @abstractmethod
    def validate(self, state: S, event: Event, adm: Admission) -> None: ...

    @abstractmethod
    def apply(self, state: S, record: Record) -> S: ...

    def initial_access(self, feed: str) -> Access | None:
        """Access fixed by the feed's name (``dm/A.B``: only A and B), or None for the usual
        policy fold. A feed with fixed access refuses the control kinds."""
        return None

    def dump(self, state: S) -> bytes | None:
        """Serialize state for a stored snapshot (None: this namespace keeps none)."""
        return None

    def load(self, feed: str, data: bytes) -> S:
        raise NotImplementedError

    def view(self, state: S) -> Any:
        """A JSON-friendly view of the state, for HTTP and the viewer."""
        return None


class Registry:
    """Maps a namespace name to its plug-in; unknown namespaces get the generic one."""

    def __init__(self, fallback: Namespace[Any]) -> None:
        self._by_name: dict[str, Namespace[Any]] = {}
        self._fallback = fallback

    def register(self, ns: Namespace[Any]) -> None:
        self._by_name[ns.name] = ns

    def for_feed(self, feed: str) -> Namespace[Any]:
        return self._by_name.get(namespace_of(feed), self._fallback)

    def names(self) -> list[str]:
        return sorted(self._by_name)

