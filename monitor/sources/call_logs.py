"""Application call logs: JSONL files of real-time calls, read incrementally into ``call_bucket``.

The line format and the hourly tally are ``monitor.calllog``; this module adds what a long-running
collector needs: cursors, rotation and storage.

Reading is incremental and exactly-once:

1. Each file's cursor (``source_cursor`` row ``logs:<path>``, JSON) holds the byte offset and
   line number read so far, plus the file's identity: device, inode and a hash of its first line.
2. Before reading, every file is matched to a cursor. Same path and identity: resume. Same inode
   but smaller than the offset or a different first line: truncated, start again. Otherwise a
   cursor left behind by a rotation (its path now holds another file) whose first line matches
   is taken over, so ``app.log`` renamed to ``app.log.1`` is not read twice.
3. Complete lines are aggregated per hour, workload, model, tier and priority; a partial last
   line (no newline yet) is left for the next read.
4. Each chunk is stored in one transaction that first advances the cursor with a compare-and-set
   (so two collectors never both count a chunk) and then adds the chunk's counts to the buckets.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert
from sqlmodel import Session, col, select

from monitor import db, rollups
from monitor.calllog import BadLine, BucketRow, HourlyTally, bucket_tokens
from monitor.collect import SourceError
from monitor.models import CallBucket, SourceCursor
from monitor.pricing import PriceBook
from monitor.workloads import WorkloadMap

if TYPE_CHECKING:
    from monitor.collect import RunStats
    from monitor.config import Settings

log = logging.getLogger(__name__)

CURSOR_PREFIX = "logs:"
# One transaction per chunk: large enough to amortise commits, small enough to show progress.
CHUNK_BYTES = 8 * 1024 * 1024
# The first line identifies a file; read at most this much of it.
HEAD_BYTES = 64 * 1024
# Per file and run, report this many bad lines in full; the rest are counted and summarised.
MAX_REPORTED_BAD_LINES = 20


# --- cursors and file identity ----------------------------------------------------------------


@dataclass
class Cursor:
    """How far one file has been read, and what identifies it."""

    path: str
    dev: int
    ino: int
    head: str | None  # sha256 of the first line (with its newline); None until there is one
    offset: int = 0
    line: int = 0  # complete lines before ``offset``

    def to_json(self) -> str:
        """Return the canonical JSON (sorted keys), also used for the compare-and-set."""
        return orjson.dumps(
            {
                "path": self.path,
                "dev": self.dev,
                "ino": self.ino,
                "head": self.head,
                "offset": self.offset,
                "line": self.line,
            },
            option=orjson.OPT_SORT_KEYS,
        ).decode()

    @classmethod
    def from_json(cls, text: str) -> Cursor | None:
        """Parse a stored cursor (None when it is not one of ours)."""
        try:
            data = orjson.loads(text)
            return cls(
                path=str(data["path"]),
                dev=int(data["dev"]),
                ino=int(data["ino"]),
                head=data.get("head"),
                offset=int(data["offset"]),
                line=int(data["line"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


def cursor_key(path: str) -> str:
    """Return the ``source_cursor`` key of a file (hashed when the path is too long)."""
    key = CURSOR_PREFIX + path
    if len(key) <= 255:
        return key
    return CURSOR_PREFIX + "sha256:" + hashlib.sha256(path.encode()).hexdigest()


@dataclass(frozen=True)
class _Seen:
    path: str
    dev: int
    ino: int
    size: int
    head: str | None


def _hash_head(first_line: bytes) -> str:
    """Hash a file's first line (at most HEAD_BYTES of it)."""
    return hashlib.sha256(first_line[:HEAD_BYTES]).hexdigest()


def _head_hash(path: str) -> str | None:
    """Hash the first line of ``path`` (None while it has no complete first line)."""
    with open(path, "rb") as fh:
        head = fh.readline(HEAD_BYTES)
    if not head.endswith(b"\n") and len(head) < HEAD_BYTES:
        return None
    return _hash_head(head)


@dataclass
class _Plan:
    seen: _Seen
    key: str
    start: Cursor
    stored: str | None  # the cursor text in the database at this key (for the compare-and-set)
    why: str  # new | resume | truncated | rotated | renamed


def plan_files(seen: Sequence[_Seen], stored: dict[str, str]) -> list[_Plan]:
    """Decide where to start reading each file, from the cursors stored before this run.

    Files that take over another path's cursor (renamed by a rotation) come first, so that a
    crash between files never loses the cursor they need.
    """
    cursors = [c for c in (Cursor.from_json(t) for t in stored.values()) if c is not None]
    by_path = {c.path: c for c in cursors}
    seen_by_path = {s.path: s for s in seen}

    def same_file(c: Cursor, s: _Seen) -> bool:
        return (c.dev, c.ino) == (s.dev, s.ino) and c.head == s.head and c.offset <= s.size

    # A cursor is orphaned when its path no longer holds the file it describes.
    orphans = [
        c for c in cursors if c.path not in seen_by_path or not same_file(c, seen_by_path[c.path])
    ]
    claimed: set[int] = set()
    plans: list[_Plan] = []
    for s in seen:
        key = cursor_key(s.path)
        old = by_path.get(s.path)
        if old is not None and same_file(old, s):
            start = Cursor(s.path, s.dev, s.ino, s.head, old.offset, old.line)
            plans.append(_Plan(s, key, start, stored.get(key), "resume"))
            continue
        # The same first line elsewhere: this file was renamed or copied (rotation). Prefer the
        # same inode, then the furthest-read cursor, so a stale cursor never causes a re-read.
        candidates = [
            c
            for c in orphans
            if s.head is not None
            and id(c) not in claimed
            and c.head == s.head
            and c.offset <= s.size
        ]
        if candidates:
            match = max(candidates, key=lambda c: ((c.dev, c.ino) == (s.dev, s.ino), c.offset))
            claimed.add(id(match))
            start = Cursor(s.path, s.dev, s.ino, s.head, match.offset, match.line)
            why = "resume" if match.path == s.path else f"renamed from {match.path}"
            plans.append(_Plan(s, key, start, stored.get(key), why))
            continue
        why = "new"
        if old is not None:
            why = "truncated" if (old.dev, old.ino) == (s.dev, s.ino) else "rotated"
        plans.append(_Plan(s, key, Cursor(s.path, s.dev, s.ino, s.head), stored.get(key), why))
    plans.sort(key=lambda p: (not p.why.startswith("renamed"), p.seen.path))
    return plans


# --- the source -------------------------------------------------------------------------------


class ConcurrentReadError(Exception):
    """Another collector advanced this file's cursor first."""


@dataclass
class CallLogSource:
    """Read the configured call-log files and add their calls to ``call_bucket``."""

    patterns: Sequence[str]
    workloads: WorkloadMap
    book: PriceBook
    chunk_bytes: int = CHUNK_BYTES
    name: str = "logs"
    _problems: list[str] = field(default_factory=list)

    def collect(self, session: Session, now: datetime, stats: RunStats) -> None:
        """Read what was appended since the last run, file by file, chunk by chunk.

        Raise SourceError at the end when some file could not be read (the others are stored).
        """
        self._problems = []
        seen = self._files(stats)
        rows = session.exec(
            select(SourceCursor.source, SourceCursor.cursor).where(
                col(SourceCursor.source).startswith(CURSOR_PREFIX)
            )
        ).all()
        stored = {str(k): str(v) for k, v in rows}
        for plan in plan_files(seen, stored):
            try:
                self._read_file(session, plan, now, stats)
            except ConcurrentReadError:
                session.rollback()
                stats.note(f"{plan.seen.path}: another collector read it first; skipped")
            except OSError as exc:
                session.rollback()
                self._problem(stats, f"{plan.seen.path}: cannot read: {exc.strerror or exc}")
        if self._problems:
            raise SourceError("; ".join(self._problems))

    def _problem(self, stats: RunStats, message: str) -> None:
        self._problems.append(message)
        stats.note(message)
        log.warning("call logs: %s", message)

    def _files(self, stats: RunStats) -> list[_Seen]:
        paths: dict[str, None] = {}
        for pattern in self.patterns:
            expanded = os.path.expanduser(pattern)
            matches = sorted(glob.glob(expanded)) if glob.has_magic(expanded) else [expanded]
            found = [m for m in matches if os.path.isfile(m)]
            if not found:
                stats.note(f"{pattern}: no call-log file there yet")
            for m in found:
                paths[os.path.abspath(m)] = None
        seen = []
        for path in paths:
            try:
                st = os.stat(path)
                seen.append(_Seen(path, st.st_dev, st.st_ino, st.st_size, _head_hash(path)))
            except OSError as exc:
                self._problem(stats, f"{path}: cannot read: {exc.strerror or exc}")
        return seen

    def _read_file(self, session: Session, plan: _Plan, now: datetime, stats: RunStats) -> None:
        cursor = plan.start
        stored = plan.stored
        path = plan.seen.path
        if plan.why not in ("new", "resume"):
            stats.note(f"{path}: {plan.why}; reading from line {cursor.line + 1}")
            log.info("call logs: %s: %s; reading from line %d", path, plan.why, cursor.line + 1)
        reported = 0

        def on_bad(bad: BadLine) -> None:
            nonlocal reported
            stats.bad_lines += 1
            reported += 1
            if reported <= MAX_REPORTED_BAD_LINES:
                stats.note(f"bad line skipped: {bad}")
                log.warning("call logs: bad line skipped: %s", bad)

        tally = HourlyTally(self.workloads, self.book)
        with open(path, "rb") as fh:
            while True:
                fh.seek(cursor.offset)
                data = fh.read(self.chunk_bytes)
                end = data.rfind(b"\n")
                while end < 0 and len(data) >= self.chunk_bytes:
                    # One line longer than a chunk: keep reading until it ends.
                    more = fh.read(self.chunk_bytes)
                    if not more:
                        break
                    end = more.rfind(b"\n")
                    if end >= 0:
                        end += len(data)
                    data += more
                if end < 0:
                    break  # nothing, or only a partial last line: wait for its newline
                lines = data[: end + 1].split(b"\n")
                lines.pop()  # the empty string after the last newline
                added = tally.feed(lines, path, cursor.line + 1, on_bad)
                head = cursor.head
                if head is None:  # only at offset 0: this chunk starts with the first line
                    head = _hash_head(data[: data.find(b"\n") + 1])
                after = Cursor(
                    path,
                    cursor.dev,
                    cursor.ino,
                    head,
                    cursor.offset + end + 1,
                    cursor.line + len(lines),
                )
                stored = self._store(session, plan.key, stored, after, tally.rows(), now)
                stats.items += added
                tally.clear()
                cursor = after
        if reported > MAX_REPORTED_BAD_LINES:
            hidden = reported - MAX_REPORTED_BAD_LINES
            stats.note(f"{path}: {hidden} more bad lines skipped (only the first are listed)")
            log.warning("call logs: %s: %d more bad lines skipped", path, hidden)

    def _store(
        self,
        session: Session,
        key: str,
        expected: str | None,
        after: Cursor,
        rows: list[BucketRow],
        now: datetime,
    ) -> str:
        """Advance the cursor and add ``rows`` to the buckets, in one transaction.

        1. Compare-and-set the cursor from ``expected`` (what this run read) to ``after``; when
           another collector moved it, raise ConcurrentReadError so nothing is counted twice.
        2. Read the existing buckets of these keys (locked FOR UPDATE on PostgreSQL).
        3. Write each bucket back with the chunk's counts added (exact Decimal sums in Python:
           SQLite would add the money strings as floats).
        """
        text = after.to_json()
        if expected is None:
            # RETURNING, not rowcount: psycopg reports -1 for INSERT .. ON CONFLICT DO NOTHING.
            stmt = _insert_new_cursor(session, {"source": key, "cursor": text, "updated_at": now})
            moved = len(session.exec(stmt.returning(col(SourceCursor.source))).all())
        else:
            moved = db.rowcount(
                session.exec(
                    update(SourceCursor)
                    .where(col(SourceCursor.source) == key, col(SourceCursor.cursor) == expected)
                    .values(cursor=text, updated_at=now)
                )
            )
        if moved != 1:
            session.rollback()
            raise ConcurrentReadError(key)
        if rows:
            merged = {r.key: r for r in rows}
            hours = [r.hour for r in rows]
            existing = session.exec(
                select(CallBucket)
                .where(col(CallBucket.hour) >= min(hours), col(CallBucket.hour) <= max(hours))
                .with_for_update()
                .execution_options(populate_existing=True)
            )
            for bucket in existing:
                k = (
                    bucket.hour,
                    bucket.workload,
                    bucket.model,
                    bucket.service_tier,
                    bucket.priority,
                )
                if k in merged:
                    total = _row_of(bucket)
                    total.add(merged[k])
                    merged[k] = total
            db.upsert(
                session,
                CallBucket,
                [r.values() for r in merged.values()],
                key=["hour", "workload", "model", "service_tier", "priority"],
            )
            rollups.mark_dirty(session, hours, now)
        session.commit()
        return text


def _row_of(bucket: CallBucket) -> BucketRow:
    return BucketRow(
        hour=bucket.hour,
        workload=bucket.workload,
        model=bucket.model,
        service_tier=bucket.service_tier,
        priority=bucket.priority,
        calls=bucket.calls,
        tokens=bucket_tokens(bucket),
        latency_ms_sum=bucket.latency_ms_sum,
        latency_ms_max=bucket.latency_ms_max,
        latency_count=bucket.latency_count,
        first_at=bucket.first_at,
        last_at=bucket.last_at,
        priced=bucket.priced,
        cost_usd=bucket.cost_usd,
        batch_cost_usd=bucket.batch_cost_usd,
    )


def _insert_new_cursor(session: Session, values: dict[str, Any]) -> Insert:
    """Return an INSERT of a cursor row that does nothing when the key already exists."""
    table = SourceCursor.__table__  # type: ignore[attr-defined]
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table).values(**values).on_conflict_do_nothing()
    return sqlite.insert(table).values(**values).on_conflict_do_nothing()


def from_settings(name: str, settings: Settings) -> CallLogSource | None:
    """Build the call-log source (None when ``[collect] call_logs`` lists no file)."""
    if not settings.collect.call_logs:
        return None
    return CallLogSource(
        patterns=tuple(settings.collect.call_logs),
        workloads=WorkloadMap(settings.workloads),
        book=PriceBook.load(settings.prices),
        name=name,
    )


__all__ = ["CallLogSource", "Cursor", "from_settings"]
