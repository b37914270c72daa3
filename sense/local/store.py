"""The dashboards of a local project, kept in sqlite so that a restart keeps the history.

Rows are plain dicts. Besides the fields of a dashboard (as the README shows one) a row has
``kind`` (``"api"``: launched through the REST API; ``"console"``: the
script of ``sense run``; ``"attached"``: the process that runs the server)
and ``handle`` (what the backend needs to find the processes again).

Example
-------
>>> store = Store(":memory:")
>>> row = store.insert(name="worker", status="starting", kind="api")
>>> store.update(row["id"], status="running")["status"]
'running'
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from datetime import datetime, timezone

from sense import status
from sense.errors import SenseError

#: The statuses of a dashboard whose process has not ended, as a tuple for SQL.
ACTIVE = tuple(sorted(status.ACTIVE))
_ACTIVE_SQL = ", ".join("?" for _ in ACTIVE)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dashboards (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL DEFAULT '',
    engine TEXT NOT NULL DEFAULT 'sense-ipython-engine',
    size TEXT NOT NULL DEFAULT '"small"',
    status TEXT NOT NULL,
    master_id INTEGER,
    startup_script TEXT NOT NULL DEFAULT '',
    startup_code TEXT NOT NULL DEFAULT '',
    env TEXT NOT NULL DEFAULT '{}',
    project_ip TEXT NOT NULL DEFAULT '',
    public_port_mapping TEXT NOT NULL DEFAULT '{}',
    exit_code INTEGER,
    created_at TEXT NOT NULL,
    started_at TEXT,
    stopped_at TEXT,
    kind TEXT NOT NULL,
    handle TEXT NOT NULL DEFAULT '{}'
)
"""
# Stored as JSON text: size may be a name or an int.
# Column names in the SQL below come from this package's code, never from a request.
_JSON_COLUMNS = ("size", "env", "public_port_mapping", "handle")


class StoreError(SenseError):
    """The dashboards' database cannot be used."""


def now() -> str:
    """The current UTC time as ISO 8601 ending in ``Z``."""
    stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


class Store:
    """Dashboard rows in one sqlite file, safe to use from many threads.

    Parameters
    ----------
    path : str or Path
        The database file (``":memory:"`` for a throwaway store).
    """

    def __init__(self, path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        try:
            self._prepare()
        except sqlite3.DatabaseError as error:
            self._db.close()
            remedy = (
                "free some space and start again"
                if "full" in str(error)
                else "if it is damaged, move it away and start again (with an empty history)"
            )
            raise StoreError(f"{path} cannot be used ({error}): {remedy}") from None

    def _prepare(self) -> None:
        self._db.row_factory = sqlite3.Row
        # A write-ahead log, synced at checkpoints rather than at every commit: a
        # launch makes several small writes, and an fsync each (milliseconds, more
        # on a busy disk, all under the lock) was most of a launch's time. A crash
        # of this process loses nothing; a crash of the machine may lose the last
        # few changes of dashboards that did not survive it anyway.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        # What the listings filter on (the log follower of `sense run` asks ten times a second).
        self._db.execute("CREATE INDEX IF NOT EXISTS dashboards_by_status ON dashboards (status)")
        self._db.execute(
            "CREATE INDEX IF NOT EXISTS dashboards_by_master ON dashboards (master_id)"
        )
        self._as_json = _json_select(self._db)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def insert(self, *, limit: tuple[str, int] | None = None, **fields) -> dict | None:
        """Add a dashboard; ``id`` and ``created_at`` are filled in. Returns the row.

        With ``limit=(kind, n)``, one transaction adds it only if fewer than ``n``
        dashboards of that kind are active, and returns None otherwise: two launches
        at once cannot both take the last place.
        """
        fields.setdefault("created_at", now())
        names = list(fields)
        values = [_encode(name, fields[name]) for name in names]
        with self._lock, self._transaction():
            if limit is not None:
                kind, most = limit
                (active,) = self._db.execute(
                    f"SELECT count(*) FROM dashboards WHERE kind = ? AND status IN ({_ACTIVE_SQL})",
                    (kind, *ACTIVE),
                ).fetchone()
                if active >= most:
                    return None
            row = self._db.execute(
                f"INSERT INTO dashboards ({', '.join(names)}) "
                f"VALUES ({', '.join('?' for _ in names)}) RETURNING *",
                values,
            ).fetchone()
            return _decode(row)

    def update(self, dashboard_id: int, *, only_if_status=None, **fields) -> dict | None:
        """Change fields of a dashboard; the changed row, or None if nothing was changed.

        With ``only_if_status`` (a tuple of statuses), the change is made only if the
        dashboard's status is one of them at that moment.
        """
        assignments = ", ".join(f"{name} = ?" for name in fields)
        values = [_encode(name, value) for name, value in fields.items()]
        condition = "id = ?"
        values.append(dashboard_id)
        if only_if_status:
            condition += f" AND status IN ({', '.join('?' for _ in only_if_status)})"
            values += list(only_if_status)
        with self._lock:
            row = self._db.execute(
                f"UPDATE dashboards SET {assignments} WHERE {condition} RETURNING *", values
            ).fetchone()
            return _decode(row) if row is not None else None

    def end(self, dashboard_id: int, status: str, exit_code: int | None) -> dict | None:
        """Record that a dashboard ended; the row, or None if there is no such dashboard.

        The status and stop time are set only if it was still active (a stop may
        have recorded them already); the exit code only if none was recorded yet.
        """
        with self._lock:
            row = self._db.execute(
                f"UPDATE dashboards SET "
                f"stopped_at = CASE WHEN status IN ({_ACTIVE_SQL}) THEN ? ELSE stopped_at END, "
                f"status = CASE WHEN status IN ({_ACTIVE_SQL}) THEN ? ELSE status END, "
                f"exit_code = coalesce(exit_code, ?) WHERE id = ? RETURNING *",
                (*ACTIVE, now(), *ACTIVE, status, exit_code, dashboard_id),
            ).fetchone()
            return _decode(row) if row is not None else None

    def get(self, dashboard_id: int) -> dict | None:
        """One dashboard, or None."""
        with self._lock:
            return self._get(dashboard_id)

    def select(
        self, *, status=None, master_id=None, kind=None, name=None, after: int | None = None
    ) -> list[dict]:
        """The dashboards matching every condition given, oldest first.

        A tuple means any of its values; ``after`` keeps the ids greater than it.
        """
        conditions, values = [], []
        wanted_columns = (
            ("status", status),
            ("master_id", master_id),
            ("kind", kind),
            ("name", name),
        )
        for column, wanted in wanted_columns:
            if wanted is None:
                continue
            wanted = tuple(wanted) if isinstance(wanted, (tuple, frozenset)) else (wanted,)
            conditions.append(f"{column} IN ({', '.join('?' for _ in wanted)})")
            values += list(wanted)
        if after is not None:
            conditions.append("id > ?")
            values.append(after)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        with self._lock:
            if self._as_json is not None:
                # One JSON text for all the rows, decoded at once: a listing of
                # thousands of dashboards costs a few milliseconds, not tens.
                (text,) = self._db.execute(
                    f"SELECT json_group_array(json(row)) FROM "
                    f"(SELECT {self._as_json} AS row FROM dashboards{where} ORDER BY id)",
                    values,
                ).fetchone()
                return sorted(json.loads(text), key=lambda row: row["id"])
            rows = self._db.execute(f"SELECT * FROM dashboards{where} ORDER BY id", values)
            return [_decode(row) for row in rows]

    @contextlib.contextmanager
    def _transaction(self):
        """One write transaction, taken at once (so a count and an insert see the same rows)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _get(self, dashboard_id: int) -> dict | None:
        row = self._db.execute("SELECT * FROM dashboards WHERE id = ?", (dashboard_id,)).fetchone()
        return _decode(row) if row is not None else None


def _json_select(db: sqlite3.Connection) -> str | None:
    """A SQL expression that makes a row one JSON object, or None where sqlite lacks JSON."""
    columns = [row[1] for row in db.execute("PRAGMA table_info(dashboards)")]
    parts = ", ".join(
        f"'{name}', json({name})" if name in _JSON_COLUMNS else f"'{name}', {name}"
        for name in columns
    )
    expression = f"json_object({parts})"
    try:
        db.execute(f"SELECT {expression} FROM dashboards LIMIT 1").fetchall()
    except sqlite3.OperationalError:
        return None
    return expression


def _encode(name: str, value):
    return json.dumps(value) if name in _JSON_COLUMNS else value


def _decode(row: sqlite3.Row) -> dict:
    record = dict(row)
    for name in _JSON_COLUMNS:
        record[name] = json.loads(record[name])
    return record
