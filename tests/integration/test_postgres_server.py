"""The throwaway PostgreSQL server that the PostgreSQL storage tests run against (issue 9, part 3):
found from the machine's binaries, never run as root, loopback only, one empty database per test."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from .postgres_server import (
    PostgresUnavailable,
    create_database,
    debian_bindirs,
    default_parent,
    find_bindir,
    fresh_database,
    postgres_server,  # noqa: F401
    postgres_url,  # noqa: F401
    start_postgres,
)

USER_RELATIONS = """
    SELECT count(*) FROM pg_class JOIN pg_namespace ON pg_namespace.oid = relnamespace
    WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg_toast%'
"""


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def relation_exists(url: str, name: str) -> bool:
    with psycopg.connect(url) as connection:
        row = connection.execute("SELECT to_regclass(%s) IS NOT NULL", [name]).fetchone()
    assert row is not None
    return bool(row[0])


@pytest.mark.parametrize("round", [1, 2])
def test_each_test_gets_an_empty_database_of_its_own(postgres_url: str, round: int) -> None:  # noqa: F811
    # Both rounds leave a table behind: the second would find the first's if databases were shared.
    assert database_name(postgres_url) not in {"postgres", "template0", "template1"}
    with psycopg.connect(postgres_url) as connection:
        row = connection.execute(USER_RELATIONS).fetchone()
        connection.execute("CREATE TABLE left_behind (round integer)")
    assert row == (0,)


def test_databases_are_isolated_and_dropped_afterwards_even_with_connections_open(postgres_server: str) -> None:  # noqa: F811
    with fresh_database(postgres_server) as first, fresh_database(postgres_server) as second:
        assert database_name(first) != database_name(second)
        with psycopg.connect(first) as connection:
            connection.execute("CREATE TABLE marker (x integer)")
        # A test's pool may still be open when its database is dropped.
        still_open = psycopg.connect(first)
        assert relation_exists(first, "marker")
        assert not relation_exists(second, "marker")
    with psycopg.connect(postgres_server) as admin:
        databases = {row[0] for row in admin.execute("SELECT datname FROM pg_database")}
    assert database_name(first) not in databases
    assert database_name(second) not in databases
    still_open.close()


def _process_uids(pid: int) -> set[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return {int(uid) for uid in line.split()[1:]}
    raise AssertionError(f"no Uid line for process {pid}")


def test_the_server_never_runs_as_root(postgres_server: str) -> None:  # noqa: F811
    with psycopg.connect(postgres_server) as connection:
        row = connection.execute("SELECT pg_backend_pid(), current_setting('data_directory')").fetchone()
        assert row is not None
        backend_pid, data_directory = row
        # While the connection is open: its backend process exits when it closes.
        uids = _process_uids(backend_pid)
    assert 0 not in uids
    assert Path(data_directory).stat().st_uid in uids
    if os.geteuid() != 0:
        assert uids == {os.geteuid()}


def test_the_server_listens_on_loopback_only_with_room_for_the_concurrency_tests(postgres_server: str) -> None:  # noqa: F811
    assert urlsplit(postgres_server).hostname == "127.0.0.1"
    with psycopg.connect(postgres_server) as connection:
        listen = connection.execute("SHOW listen_addresses").fetchone()
        max_connections = connection.execute("SHOW max_connections").fetchone()
    assert listen == ("127.0.0.1",)
    assert max_connections is not None and int(max_connections[0]) >= 100


def test_without_binaries_the_finder_says_how_to_install_them() -> None:
    with pytest.raises(PostgresUnavailable, match=r"apt-get install postgresql") as raised:
        find_bindir([])
    assert "initdb" in str(raised.value)


def _fake_bindir(directory: Path, programs: tuple[str, ...]) -> None:
    directory.mkdir(parents=True)
    for program in programs:
        (directory / program).write_text("#!/bin/sh\n")
        (directory / program).chmod(0o755)


def test_the_finder_takes_the_newest_debian_version_that_has_every_program(tmp_path: Path) -> None:
    every = ("initdb", "pg_ctl", "postgres")
    _fake_bindir(tmp_path / "9.6" / "bin", every)
    _fake_bindir(tmp_path / "13" / "bin", every)
    _fake_bindir(tmp_path / "16" / "bin", ("initdb", "pg_ctl"))  # a client-only install
    (tmp_path / "README").write_text("not a version\n")
    assert debian_bindirs(tmp_path) == [tmp_path / "16" / "bin", tmp_path / "13" / "bin", tmp_path / "9.6" / "bin"]
    assert find_bindir(debian_bindirs(tmp_path)) == tmp_path / "13" / "bin"
    with pytest.raises(PostgresUnavailable, match="16/bin"):
        find_bindir([tmp_path / "16" / "bin"])


def test_a_server_that_does_not_start_is_reported_with_its_log_and_cleaned_up() -> None:
    # A directory every account may traverse (pytest's own are root's 0700 ones when we are root).
    parent = Path(tempfile.mkdtemp(dir=default_parent()))
    try:
        parent.chmod(0o755)
        with pytest.raises(PostgresUnavailable, match=r'invalid value for parameter "shared_buffers"'):
            with start_postgres(parent, shared_buffers="plenty"):
                pass
        assert list(parent.iterdir()) == []
    finally:
        parent.rmdir()


def test_a_stopped_server_refuses_connections_and_comes_back_with_its_data() -> None:
    with start_postgres() as server:
        port = server.port
        assert urlsplit(server.admin_url).port == port
        url = create_database(server.admin_url)
        with psycopg.connect(url) as connection:
            connection.execute("CREATE TABLE kept AS SELECT 42 AS answer")
        server.stop()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(url, connect_timeout=2)
        server.start()
        assert urlsplit(server.admin_url).port == port
        with psycopg.connect(url) as connection:
            assert connection.execute("SELECT answer FROM kept").fetchone() == (42,)
