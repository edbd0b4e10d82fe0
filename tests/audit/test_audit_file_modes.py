"""Finding 19 of the hostile-input review: the SQLite audit database and its WAL files hold the trail (patient
keys, cards, feedback), so only their owner may read them — 0600, in folders created 0700 — like the
spool's files. Checked by stat after real writes, and for a database an older version left 0644.
"""

from __future__ import annotations

import os
import stat

from audit_support import SERVICE, hook_body

from cds.db import private_sqlite_file


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_database_and_its_wal_files_are_0600_in_a_0700_folder(make_app, tmp_path):
    old = os.umask(0o022)  # the usual umask: files 0644, folders 0755 unless the service says otherwise
    try:
        folder = tmp_path / "new" / "db"
        app = make_app(f"sqlite:///{folder}/audit.sqlite3")
        client = app.test_client()
        for i in range(3):
            assert client.post(f"/cds-services/{SERVICE}", json=hook_body(f"p-{i}")).status_code == 200
        engine = app.extensions["cds.audit"].engine
        with engine.connect() as conn:  # an open connection keeps -wal and -shm in place
            conn.exec_driver_sql("SELECT count(*) FROM audit_record").scalar_one()
            files = [folder / "audit.sqlite3", folder / "audit.sqlite3-wal", folder / "audit.sqlite3-shm"]
            assert all(f.exists() for f in files)
            assert {f.name: _mode(f) for f in files} == {f.name: 0o600 for f in files}
        assert _mode(folder) == 0o700 and _mode(folder.parent) == 0o700
        spool = app.extensions["cds.audit"].spool
        spool.append({"kind": "probe"})
        assert _mode(spool.folder) == 0o700 and all(_mode(p) == 0o600 for p in spool.files())
    finally:
        os.umask(old)


def test_a_world_readable_database_left_by_an_older_version_is_made_private(tmp_path):
    path = tmp_path / "old.sqlite3"
    for name in (path, tmp_path / "old.sqlite3-wal"):
        name.write_bytes(b"")
        os.chmod(name, 0o644)
    private_sqlite_file(path)
    assert _mode(path) == 0o600 and _mode(tmp_path / "old.sqlite3-wal") == 0o600
