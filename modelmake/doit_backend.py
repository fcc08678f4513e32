"""doit's sqlite3 state file, created on the first write rather than when doit starts.

doit opens its state file before it loads any task, so with the stock
backend `doit list` or `doit info` in a fresh workspace would create build/
and build/.doit.db.  This backend answers reads on a missing file with
nothing recorded, and creates the folder and the file when doit first
records a result.  Writes go through sqlite's transactions as in doit's
SqliteDB, so a killed build never leaves a corrupt state file.

Registered as the doit backend ``modelmake-sqlite3`` (pyproject.toml).
"""
from __future__ import annotations

from pathlib import Path

from doit.dependency import SqliteDB


class LazySqliteDB(SqliteDB):
    desc = "sqlite3, with the file and its folder created on the first write"

    def __init__(self, name, codec, *, module_name=None):
        # SqliteDB.__init__ connects (creating the file); everything else it sets is set here.
        self.name = name
        self.codec = codec
        self._cache = {}
        self._dirty = set()
        self._connection = None

    @property
    def _conn(self):
        if self._connection is None:
            Path(self.name).parent.mkdir(parents=True, exist_ok=True)
            self._connection = self._sqlite3(self.name)
        return self._connection

    def _exists(self) -> bool:
        return self._connection is not None or Path(self.name).exists()

    def _get_task_data(self, task_id):
        return super()._get_task_data(task_id) if self._exists() else {}

    def in_(self, task_id):
        if task_id in self._cache:
            return True
        return self._exists() and super().in_(task_id)

    def dump(self):
        if not self._dirty and self._connection is None:
            return  # nothing recorded and nothing open: leave the workspace as it is
        super().dump()
        self._connection = None

    def remove(self, task_id):
        if self._exists():
            super().remove(task_id)
        else:
            self._cache.pop(task_id, None)
            self._dirty.discard(task_id)

    def remove_all(self):
        if self._exists():
            super().remove_all()
        else:
            self._cache = {}
            self._dirty = set()
