"""The Redis key schema shared by the publisher and the API. One place, nothing else spells a key.

A *publication* is one precomputed set for one variant, id ``<version>.<run_key>[-r<revision>]-<nonce>``
(e.g. ``v1.20261123T190000-3f9a1c2e``): unique per committed revision, also across rebuilt lakes.
Its keys are written first; clients switch to it by one atomic SET of the variant's pointer, so nobody ever
sees a missing or mixed set. Values are UTF-8 JSON, except ``rec`` values in the ``packed`` encoding
(``skyrec.publish.codec``; the predictions meta and the pointer name a publication's ``encoding``).

  {p}:current:{variant}              JSON pointer {"publication", "model", "model_version", "run_key",
                                     "published_at", "users", "items", "evaluation", "encoding"}
                                     (switched atomically)
  {p}:history:{variant}              list of previous pointer JSONs, newest first (for rollback)
  {p}:rec:{variant}:{pub}:{user_id}  the user's list best first: JSON [["item_id", score], ...] or packed bytes
                                     (tag 0x01, item-table positions, quantised scores; ``codec``)
  {p}:sim:{variant}:{pub}:{item_id}  "more like this": the items most similar to ``item_id`` under the rail's
                                     rules, best first, in the same encoding as ``rec`` values (``codec``; the
                                     same item table). Written with the publication, removed with it
                                     (``precompute.similar_k``; docs/similar.md)
  {p}:fallback:{variant}:{pub}       JSON [["item_id", score], ...] cold-start list
  {p}:items:{variant}:{pub}          hash item_id -> JSON {"title", "brand", "genres", "formats",
                                     "available_until" (ISO-8601 or null)}; in a packed publication also the
                                     field ``codec.ITEM_TABLE_FIELD`` ("\\x00item_table"): the item table,
                                     JSON {"encoding", "version", "decimals", "items": [ids in position order]}
  {p}:users:{variant}:{pub}          set of the user ids that have a rec key in the publication (the explorer's
                                     "random user"; optional: the API falls back to a bounded SCAN without it).
                                     The publisher writes a random sample (``precompute.users_sample`` ids).
  {p}:pubs:{variant}                 sorted set: publication ids loaded into this Redis, scored by the start of
                                     their latest load attempt (the publisher's registry, for removal of old
                                     publications and of loads nobody finished: ``skyrec.publish.removal``)
  {p}:variants                       set of the variants (rails) with a registry here (``skyrec gc`` and
                                     ``skyrec retire`` find every rail from it, configured or not)
  {p}:doomed:{variant}               hash pub -> time: publications being removed, until their last key is
                                     gone; none of them may be registered again, switched to or rolled back to
  {p}:rmlock:{variant}:{pub}         the remover's token while it removes ``pub``, with a TTL each batch
                                     refreshes (a remover that died is resumed by the next cleanup)
  {p}:hist:{activity}:{user_id}     JSON [["item_id", "ISO ts"], ...] the user's last plays, newest first
                                     (``publish.history_items``). The namespace ``{activity}`` is shared by
                                     every rail published from the same activity snapshot with the same
                                     ``history_items`` (``Keys.shared_hist_namespace``: ``@<snapshot>.n<N>``),
                                     so the plays are held once, not once per rail; the pointer names it in its
                                     "activity" field. It belongs to the publications attached to it
                                     (``histrefs``) and is collected when the last one is removed
                                     (``skyrec.publish.histories``). Publications from before the namespace
                                     was shared name ``{variant}:{pub}`` (``Keys.hist_namespace``), owned by
                                     the publication alone, whose values may be JSON {"plays": [...],
                                     "also_played": [...]} (``parse_history`` reads both forms)
  {p}:also:{variant}:{pub}:{user_id} the user's older plays in the "more like this" lists of the recent
                                     plays, which "because you played X" leaves out too: in a packed
                                     publication their positions in its item table (``codec.decode_also``),
                                     else JSON ["item_id", ...]; only for users who have some; owned by the
                                     publication (rail-specific: they depend on the rail's lists). The
                                     pointer's "also_played" is true when the publication has them
  {p}:histrefs:{activity}            set of "<variant>/<pub>": the publications attached to a shared history
                                     namespace (its owners)
  {p}:histfiles:{activity}           set of the sha256 of the history RESP files fully loaded into it (a
                                     publication of the same plays skips them)
  {p}:histgc:{activity}              present while the namespace is being collected (a token, with a TTL
                                     the collector refreshes): no publication attaches meanwhile
  {p}:histns                         sorted set: the shared namespaces loaded into this Redis (for the sweep
                                     of namespaces whose collection was interrupted)
  {p}:histof:{variant}               hash pub -> the shared namespace that publication is attached to
"""

from __future__ import annotations

import json
import re
from typing import Any

from skyrec.config import ConfigError
from skyrec.publish.codec import ALSO_TAG, CodecError, ItemTable, decode_also

_SAFE = re.compile(r"^[A-Za-z0-9_.:@\-]{1,128}$")


def _check(kind: str, value: str) -> str:
    if not _SAFE.fullmatch(value):  # fullmatch: `$` alone would let a trailing newline through
        raise ConfigError(f"{kind}: {value!r} is not a valid identifier")
    return value


def publication_id(version: str, run_key: str) -> str:
    return f"{_check('version', version)}.{_check('run_key', run_key)}"


class Keys:
    def __init__(self, prefix: str) -> None:
        self.p = _check("key_prefix", prefix)

    def current(self, variant: str) -> str:
        return f"{self.p}:current:{variant}"

    def history(self, variant: str) -> str:
        return f"{self.p}:history:{variant}"

    def rec(self, variant: str, pub: str, user_id: str) -> str:
        return f"{self.p}:rec:{variant}:{pub}:{user_id}"

    def rec_pattern(self, variant: str, pub: str) -> str:
        return f"{self.p}:rec:{variant}:{pub}:*"

    def sim(self, variant: str, pub: str, item_id: str) -> str:
        return f"{self.p}:sim:{variant}:{pub}:{item_id}"

    def sim_pattern(self, variant: str, pub: str) -> str:
        return f"{self.p}:sim:{variant}:{pub}:*"

    def fallback(self, variant: str, pub: str) -> str:
        return f"{self.p}:fallback:{variant}:{pub}"

    def items(self, variant: str, pub: str) -> str:
        return f"{self.p}:items:{variant}:{pub}"

    def users(self, variant: str, pub: str) -> str:
        return f"{self.p}:users:{variant}:{pub}"

    @staticmethod
    def hist_namespace(variant: str, pub: str) -> str:
        """The history namespace owned by one publication, as publications made before histories were shared
        name it (removing the publication removes these keys with it)."""
        return f"{variant}:{pub}"

    @staticmethod
    def shared_hist_namespace(snapshot_token: str, history_items: int) -> str:
        """The history namespace of one committed activity snapshot at ``history_items`` plays a user, shared
        by every rail that publishes from it. ``@`` keeps it apart from any ``<variant>:<pub>`` namespace
        (variant names are lower_snake_case)."""
        return f"@{_check('snapshot token', snapshot_token)}.n{int(history_items)}"

    @staticmethod
    def is_shared_namespace(activity: str) -> bool:
        return activity.startswith("@")

    def also(self, variant: str, pub: str, user_id: str) -> str:
        return f"{self.p}:also:{variant}:{pub}:{user_id}"

    def also_pattern(self, variant: str, pub: str) -> str:
        return f"{self.p}:also:{variant}:{pub}:*"

    def hist_refs(self, activity: str) -> str:
        return f"{self.p}:histrefs:{activity}"

    def hist_files(self, activity: str) -> str:
        return f"{self.p}:histfiles:{activity}"

    def hist_gc(self, activity: str) -> str:
        return f"{self.p}:histgc:{activity}"

    def hist_registry(self) -> str:
        return f"{self.p}:histns"

    def hist_of(self, variant: str) -> str:
        return f"{self.p}:histof:{variant}"

    def hist(self, activity: str, user_id: str) -> str:
        return f"{self.p}:hist:{activity}:{user_id}"

    def hist_pattern(self, activity: str) -> str:
        return f"{self.p}:hist:{activity}:*"

    def publications(self, variant: str) -> str:
        return f"{self.p}:pubs:{variant}"

    def variants(self) -> str:
        return f"{self.p}:variants"

    def publications_pattern(self) -> str:
        return f"{self.p}:pubs:*"

    def doomed(self, variant: str) -> str:
        return f"{self.p}:doomed:{variant}"

    def removal_lock(self, variant: str, pub: str) -> str:
        return f"{self.p}:rmlock:{variant}:{pub}"

    def publication_pattern(self, variant: str, pub: str) -> list[str]:
        """Patterns matching every key of one publication (for removal of old versions)."""
        return [self.rec_pattern(variant, pub), self.sim_pattern(variant, pub), self.fallback(variant, pub),
                self.items(variant, pub), self.users(variant, pub), self.also_pattern(variant, pub),
                self.hist_pattern(self.hist_namespace(variant, pub))]


VALID_USER_ID = _SAFE


def decode_object(raw: Any) -> dict[str, Any] | None:
    """A JSON object stored under a key; None when the key is absent or holds anything else."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def parse_history(raw: bytes | str) -> tuple[list[tuple[str, str]], set[str]]:
    """A history value: the plays [(item, ts), ...] newest first (``scoring.history.encode_history_sets``), and,
    in the values publications wrote before histories were shared (``{"plays": [...], "also_played": [...]}``),
    the older plays "because you played" also leaves out. Malformed entries are skipped; a value that is not
    JSON raises ValueError."""
    value = json.loads(raw)
    also: set[str] = set()
    if isinstance(value, dict):
        also = {str(i) for i in value.get("also_played") or () if isinstance(i, str)}
        value = value.get("plays")
    plays: list[tuple[str, str]] = []
    for entry in value if isinstance(value, list) else ():
        try:
            plays.append((str(entry[0]), str(entry[1])))
        except (TypeError, IndexError, KeyError):
            continue
    return plays, also


def parse_also(raw: bytes | str, table: ItemTable | None = None) -> set[str]:
    """An ``also`` value: the older plays "because you played X" leaves out on one rail, packed (positions into
    the publication's item ``table``, ``codec.decode_also``) or a JSON list. Entries of a JSON list that are not
    strings are skipped; a value that is neither raises ValueError (``CodecError`` for a packed one, or one
    without its table)."""
    if isinstance(raw, bytes | bytearray) and raw[:1] == bytes([ALSO_TAG]):
        if table is None:
            raise CodecError("packed also value but the publication has no item table")
        return decode_also(raw, table)
    value = json.loads(raw)
    if not isinstance(value, list):
        raise ValueError("an also_played value is a JSON list")
    return {i for i in value if isinstance(i, str)}
