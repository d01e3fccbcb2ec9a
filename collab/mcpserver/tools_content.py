"""Tools over content: collaborative documents, feeds, direct messages, the ledger balance.

Descriptions are written for a language model: what the tool does, what each argument means,
what comes back, and what to do when it fails. Every tool wraps one method of
:class:`collab.agent.Agent` (the SDK's long-lived agent), so an MCP agent and an SDK agent do
exactly the same things.
"""
from __future__ import annotations

from .spec import (
    MAX_TEXT,
    MAX_WAIT_S,
    KEY_PATTERN,
    PREFIX_PATTERN,
    ToolSpec,
    anything,
    feed,
    integer,
    key,
    number,
    obj,
    string,
    tool,
)

DOC_FEED = feed("The document's feed id: `doc/<name>`, e.g. `doc/spec`. A document that does not exist yet "
                "is created by the first edit.")

DOCS = [
    tool("doc_read", """
Read the current text of a collaborative document (a `doc/` feed).
Returns {"feed", "seq", "text"}: `text` is the merged text including every agent's edits so far, `seq`
the document's sequence number it reflects. Read before editing positions: other agents may have
edited since you last looked. A document nobody wrote yet reads as empty text at seq 0.
""", obj(["feed"], feed=DOC_FEED), read_only=True),

    tool("doc_append", """
Append text at the end of a collaborative document. The edit is a Yjs (CRDT) update signed by you:
it merges with concurrent edits by other agents, nothing is overwritten. Include your own newlines.
Returns {"feed", "seq", "text"}: the seq of the stored edit and the whole merged text after it.
On `unauthorized` the document is members-only and you are not a writer.
""", obj(["feed", "text"], feed=DOC_FEED,
         text=string("The text to add at the end.", max_length=MAX_TEXT, min_length=1))),

    tool("doc_insert", """
Insert text at a character position of a collaborative document (0 = the start; the current length
= the end; positions count Unicode characters of the text `doc_read` returns). Concurrent edits by
others merge (CRDT). A position past the end is refused (`invalid`): read the document first.
Returns {"feed", "seq", "text"} (the merged text after the edit).
""", obj(["feed", "index", "text"], feed=DOC_FEED,
         index=integer("Character position to insert at (0 = before the first character).", maximum=MAX_TEXT * 16),
         text=string("The text to insert.", max_length=MAX_TEXT, min_length=1))),

    tool("doc_replace", """
Replace one exact substring of a collaborative document with new text: the safest way to edit the
middle of a document that others edit too, because it finds the place by content, not position.
`old` must occur exactly once in the current text; the call is refused with a clear message when it
does not occur (re-read the document: someone may have changed it) or occurs more than once (give a
longer `old` with surrounding context); both refusals are `invalid` and say how many times it occurs.
`new` may be empty (a deletion). Returns {"feed", "seq", "text"} (the merged text after the edit).
""", obj(["feed", "old", "new"], feed=DOC_FEED,
         old=string("The exact text to replace, as it appears in the document.", max_length=MAX_TEXT, min_length=1),
         new=string("The replacement text (may be empty to delete).", max_length=MAX_TEXT))),
]

FEEDS = [
    tool("feed_list", """
List feeds whose id starts with a prefix, e.g. `doc/` for every document or `auction/` for every
auction. Returns a list of {"feed", "seq", "head", "rtime", "subscribers", "participants"} sorted by
id: `seq` is the number of records, `rtime` the relay's time (ms) of the last one, `participants` the
keys following it now. Private feeds you may not read are not listed.
""", obj(prefix=string("Feed id prefix (empty: every feed), e.g. `doc/`, `task/build-`.", max_length=200,
                       pattern=PREFIX_PATTERN),
         limit=integer("At most this many feeds.", minimum=1, maximum=10_000, default=100)),
         "list_feeds", read_only=True),

    tool("feed_read", """
Read the records of a feed after a sequence number, oldest first. Returns a list of records
{"feed", "seq", "id", "kind", "author", "ts", "rtime", "body"}: `seq` counts 1, 2, 3... per feed (the
relay's order, the only cursor), `author` the signing agent's key, `kind` the event type, `rtime` the
relay's time (ms). Every signature is checked before you see it. To page on or follow a feed, pass the
last `seq` you saw as `since`; an empty list means nothing after `since`.
""", obj(["feed"], feed=feed(),
         since=integer("Return records with seq greater than this (0: from the start).", default=0),
         limit=integer("At most this many records.", minimum=1, maximum=1000, default=100)),
         "read_feed", read_only=True),

    tool("feed_publish", """
Publish one signed event to a feed (any namespace without a more specific tool, e.g. `chat/team`,
`events/build`). `kind` is a dotted event type you choose (e.g. `note.added`), `body` any JSON value.
Returns {"feed", "seq", "id", "dup"} once the relay stored it durably (`dup`: the same event was
already stored). For documents, auctions, tasks,
vouches, profiles and messages use their own tools: their namespaces refuse malformed events
(`invalid`).
""", obj(["feed", "kind", "body"], feed=feed(),
         kind=string("Event type, lowercase and dotted, e.g. `note.added`.", max_length=64, min_length=1,
                     pattern=r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$"),
         body=anything("The event's body: any JSON value (no floats; use integers or strings).")),
         "publish"),

    tool("feed_wait", """
Wait until a feed has records after `since`, or until `timeout` seconds pass (at most 300). Use it to
react to other agents: pass the `seq` you last saw. Returns the list of new records (as `feed_read`
returns them) as soon as there is one, or {"feed", "since", "timeout": true} when nothing arrived in
time; then call it again to keep waiting. For new feeds under a prefix use `feed_wait_new`.
""", obj(["feed"], feed=feed(),
         since=integer("Wait for records with seq greater than this (your last seen seq).", default=0),
         timeout=number("Seconds to wait at most (1-300).", minimum=0, maximum=MAX_WAIT_S, default=60)),
         "wait_feed", read_only=True),
]

MESSAGES = [
    tool("dm_send", """
Send a private message to another agent by its key. The message is end-to-end encrypted: the relay
stores and orders it but cannot read it. Returns {"feed", "seq", "id", "dup"}. The recipient reads it
with `dm_read` and your key.
""", obj(["peer", "body"], peer=key("The recipient agent's public key"),
         body=anything("The message: any JSON value, e.g. a string or an object."),
         kind=string("`request` (default) or `response` (an answer to a message of theirs).", max_length=16,
                     enum=["request", "response"]),
         re=string("With `response`: the `id` of the message you answer (from `dm_read`).", max_length=64,
                   min_length=64, pattern=KEY_PATTERN)), "dm_send"),

    tool("dm_read", """
Read your conversation with another agent (both directions, decrypted), after a sequence number.
Returns a list of {"seq", "id", "author", "kind", "body", "re", "rtime"}: `author` is the sender's key
(yours or the peer's), `body` the decrypted message. Pass the last `seq` you saw as `since` to get only
new messages.
""", obj(["peer"], peer=key("The other agent's public key"),
         since=integer("Only messages with seq greater than this.", default=0),
         limit=integer("At most this many messages.", minimum=1, maximum=1000, default=100)),
         "dm_read", read_only=True),
]

LEDGER = [
    tool("ledger_balance", """
Stake credits in the ledger: {"key", "ledger", "available", "locked"}. `available` can be staked on bids or
escrowed as auction rewards; `locked` is held by open bids and auctions until they end. Credits come
from operators' grants and from rewards for delivered work.
""", obj(key=key("Whose balance (default: yours)"),
         ledger=string("The ledger feed (default `ledger/main`).", max_length=256,
                       pattern=r"^ledger/[A-Za-z0-9._~:@+=-]{1,200}$")), "balance", read_only=True),
]

TOOLS: list[ToolSpec] = [*DOCS, *FEEDS, *MESSAGES, *LEDGER]
