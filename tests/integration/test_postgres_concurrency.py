"""Every storage rule holds across processes, with the same outcome on SQLite and PostgreSQL
(issue 9, parts 2 and 3): processes forked as gunicorn forks its workers, each opening its own
database object after the fork, race on one row.

- A code is redeemed exactly once (RFC 6749 §4.1.2, OAuth 2.1 §4.1.3): at the store, and through
  the token endpoint's service, where the losers' replays revoke the grant.
- A refresh token presented by 8 processes at once (OAuth 2.1 §4.3.1 rotation with the grace for
  one retry, domain/services/tokens.py::refresh): the first rotates it, the second is the one
  retry the grace allows, the third is a replay that revokes the grant, the rest find it revoked
  (or replay too): 2 get tokens, 6 invalid_grant, the grant ends revoked, on both backends.
- The upstream refresh lease: one upstream refresh per grant at a time, the others use its result.
- A grant revoked through one process's store is refused by another's at its next lookup; a
  revocation racing a refresh of the same grant neither deadlocks nor misses its new tokens.
- PostgreSQL only: two instances migrating an empty database at once (the advisory lock), and
  ``ensure_schema`` giving up (False) while another session holds the migration lock.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

import psycopg
import pytest

from mcp_oauth_bridge.adapters.storage.crypto import SecretBox, generate_key
from mcp_oauth_bridge.adapters.storage.postgres import PostgresDatabase
from mcp_oauth_bridge.adapters.storage.postgres.database import MIGRATION_LOCK_KEY
from mcp_oauth_bridge.adapters.storage.postgres.migrations import MIGRATIONS as POSTGRES_MIGRATIONS
from mcp_oauth_bridge.adapters.storage.sqlite import SqliteDatabase
from mcp_oauth_bridge.adapters.system import SecretsTokenGenerator, SystemClock
from mcp_oauth_bridge.domain.errors import InvalidGrant, InvalidToken
from mcp_oauth_bridge.domain.model import AccessToken, RefreshToken, UpstreamLogin, UpstreamTokens
from mcp_oauth_bridge.domain.policy import ServerPolicy
from mcp_oauth_bridge.domain.refresh_tokens import refresh_token_value
from mcp_oauth_bridge.domain.security import TokenHasher, s256_challenge
from mcp_oauth_bridge.domain.services.bearer import BearerAuthenticator
from mcp_oauth_bridge.domain.services.housekeeping import Housekeeping
from mcp_oauth_bridge.domain.services.tokens import ACCESS_TOKEN_PREFIX, TokenService
from mcp_oauth_bridge.domain.services.upstream import UpstreamTokenService
from tests.contract.samples import NOW, RESOURCE, make_client, make_code, make_grant, make_upstream_tokens
from tests.contract.stores import Stores, postgres_stores, sqlite_stores
from tests.fakes import FixedClock

from .postgres_server import fresh_database, postgres_server, postgres_url  # noqa: F401  (fixtures)

PROCESSES = 8
HASH_KEY = b"concurrency-test-token-hash-key-32b"
HASHER = TokenHasher(HASH_KEY)
VERIFIER = "v" * 43
POLICY = ServerPolicy(issuer="https://auth.example.com", resource=RESOURCE, scopes_supported=("mcp:read",))
# gunicorn forks its workers; so do these tests (Linux only, as the server).
CONTEXT = multiprocessing.get_context("fork")
# Generous: a round takes milliseconds; this only bounds a hung test.
WAIT_SECONDS = 60.0
# Code redemption at the store: issue 9 asks for 100 rounds on PostgreSQL (SQLite's are as cheap).
STORE_REDEMPTION_ROUNDS = 100
SERVICE_ROUNDS = 10
LEASE_ROUNDS = 3
# How long the identity provider double takes to refresh: the other 7 processes must find the
# lease taken and wait for its result.
UPSTREAM_REFRESH_SECONDS = 0.3


# -- the two backends, each opened anew in every process ------------------------------------------


@dataclass(frozen=True)
class Backend:
    """Where one test's database is; ``open()`` makes a new database object on it (each process
    calls it after the fork, as a gunicorn worker builds its own container)."""

    name: str
    location: str
    key: str

    @contextmanager
    def open(self) -> Iterator[Stores]:
        box = SecretBox([self.key])
        database: SqliteDatabase | PostgresDatabase
        if self.name == "sqlite":
            database = SqliteDatabase(self.location, box)
            stores = sqlite_stores(database)
        else:
            database = PostgresDatabase(self.location, box)
            stores = postgres_stores(database)
        try:
            yield stores
        finally:
            database.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        location = str(tmp_path / "storage" / "bridge.db")
    else:
        # A fresh database on this test process's throwaway server (dropped afterwards).
        location = request.getfixturevalue("postgres_url")
    chosen = Backend(request.param, location, generate_key())
    with chosen.open() as stores:
        stores.admin.migrate()
    return chosen


# -- racing processes ------------------------------------------------------------------------------

# In a child: given its index, a context giving the function it runs each round (round -> outcome).
Contender = Callable[[int], ContextManager[Callable[[int], str]]]


def _contend(contender: Contender, index: int, rounds: int, barrier: Any, results: Any) -> None:
    try:
        with contender(index) as run:
            for round_ in range(rounds):
                barrier.wait(WAIT_SECONDS)
                try:
                    outcome = run(round_)
                except Exception as exc:  # noqa: BLE001 - the parent asserts on it
                    outcome = f"error: {exc!r}"
                results.put((round_, outcome))
    except BaseException as exc:  # noqa: BLE001 - the parent asserts on it
        barrier.abort()
        results.put((-1, f"error: {exc!r}"))


def race(contender: Contender, *, rounds: int = 1, processes: int = PROCESSES) -> list[list[str]]:
    """``processes`` forked processes, each entering ``contender(index)`` once (its own database
    object, opened after the fork), then running each round at the same moment as the others
    (a barrier per round); the outcomes of each round, sorted."""
    barrier = CONTEXT.Barrier(processes)
    results = CONTEXT.Queue()
    children = [
        CONTEXT.Process(target=_contend, args=(contender, index, rounds, barrier, results))
        for index in range(processes)
    ]
    for child in children:
        child.start()
    outcomes: list[list[str]] = [[] for _ in range(rounds)]
    try:
        for _ in range(rounds * processes):
            round_, outcome = results.get(timeout=WAIT_SECONDS)
            assert round_ >= 0, outcome
            outcomes[round_].append(outcome)
    finally:
        for child in children:
            child.join(timeout=WAIT_SECONDS)
            if child.exitcode is None:
                child.kill()
                child.join()
    assert [child.exitcode for child in children] == [0] * processes
    return [sorted(round_outcomes) for round_outcomes in outcomes]


@contextmanager
def just(run: Callable[[int], str]) -> Iterator[Callable[[int], str]]:
    yield run


def token_service(stores: Stores, clock: FixedClock) -> TokenService:
    return TokenService(
        clients=stores.clients,
        authorizations=stores.authorizations,
        grants=stores.grants,
        access_tokens=stores.access_tokens,
        refresh_tokens=stores.refresh_tokens,
        unit_of_work=stores.unit_of_work,
        clock=clock,
        tokens=SecretsTokenGenerator(),
        hasher=HASHER,
        policy=POLICY,
        housekeeping=Housekeeping(clients=stores.clients, storage=stores.admin, clock=clock, policy=POLICY),
    )


def code_value(round_: int) -> str:
    return f"mob_ac_{round_:043d}"


def public_client() -> Any:
    return make_client(token_endpoint_auth_method="none", secret_hash=None, scope="mcp:read")


# -- one code, redeemed exactly once ---------------------------------------------------------------


def test_eight_processes_redeem_one_code_at_the_store_exactly_once_round_after_round(backend: Backend) -> None:
    rounds = STORE_REDEMPTION_ROUNDS
    with backend.open() as stores:
        stores.clients.add(public_client())
        stores.grants.add_grant(make_grant(scopes=("mcp:read",)), None)
        for round_ in range(rounds):
            stores.authorizations.add_code(make_code(HASHER.hash(code_value(round_)), expires_at=NOW + 600))

    @contextmanager
    def redeemer(index: int) -> Iterator[Callable[[int], str]]:
        with backend.open() as stores:

            def redeem(round_: int) -> str:
                first = stores.authorizations.redeem_code(HASHER.hash(code_value(round_)), NOW + 1)
                return "first" if first else "replay"

            yield redeem

    outcomes = race(redeemer, rounds=rounds)
    assert outcomes == [["first"] + ["replay"] * (PROCESSES - 1)] * rounds


def test_eight_processes_exchange_one_code_and_exactly_one_gets_tokens(backend: Backend) -> None:
    with backend.open() as stores:
        stores.clients.add(public_client())
        for round_ in range(SERVICE_ROUNDS):
            grant = make_grant(f"grant-{round_}", scopes=("mcp:read",))
            stores.grants.add_grant(grant, make_upstream_tokens())
            code = make_code(
                HASHER.hash(code_value(round_)),
                grant_id=grant.grant_id,
                code_challenge=s256_challenge(VERIFIER),
                expires_at=NOW + 600,
            )
            stores.authorizations.add_code(code)

    @contextmanager
    def exchanger(index: int) -> Iterator[Callable[[int], str]]:
        with backend.open() as stores:
            service = token_service(stores, FixedClock(NOW + 1))
            client = stores.clients.get("client-1")
            assert client is not None

            def exchange(round_: int) -> str:
                try:
                    issued = service.exchange_code(
                        client, code=code_value(round_), redirect_uri=None, code_verifier=VERIFIER, resource=RESOURCE
                    )
                except InvalidGrant:
                    return "invalid_grant"
                return "tokens" if issued.access_token and issued.refresh_token else "empty"

            yield exchange

    outcomes = race(exchanger, rounds=SERVICE_ROUNDS)
    assert outcomes == [["invalid_grant"] * (PROCESSES - 1) + ["tokens"]] * SERVICE_ROUNDS
    # The replays revoked each grant, so even the winner's tokens are now unusable.
    with backend.open() as stores:
        for round_ in range(SERVICE_ROUNDS):
            grant = stores.grants.get_grant(f"grant-{round_}")
            assert grant is not None and grant.is_revoked


# -- one refresh token, presented 8 times at once --------------------------------------------------

REFRESH_ROUNDS = 20
# What the grace rule gives for 8 simultaneous presentations of a grant's current refresh token,
# whatever order they are served in: the 1st rotates it (tokens), the 2nd is the single retry
# the grace period allows (tokens, a second successor), the 3rd is a replay (invalid_grant, the
# grant revoked), and the other 5 find it revoked or replay again (invalid_grant).
REFRESH_OUTCOME = ["invalid_grant"] * 6 + ["tokens"] * 2


def seed_refresh_token(stores: Stores, grant_id: str) -> str:
    """A grant with its generation-0 refresh token (as a code exchange leaves it); its value."""
    stores.grants.add_grant(make_grant(grant_id, scopes=("mcp:read",)), make_upstream_tokens())
    value = refresh_token_value(HASHER, grant_id=grant_id, generation=0, secret=SecretsTokenGenerator().generate(""))
    token = RefreshToken(
        token_hash=HASHER.hash(value),
        grant_id=grant_id,
        client_id="client-1",
        generation=0,
        scopes=("mcp:read",),
        resource=RESOURCE,
        issued_at=NOW,
        expires_at=NOW + 86_400,
    )
    stores.refresh_tokens.add_refresh_token(token)
    return value


def test_eight_processes_present_one_refresh_token_and_the_grace_rule_decides_identically(backend: Backend) -> None:
    with backend.open() as stores:
        stores.clients.add(public_client())
        values = [seed_refresh_token(stores, f"grant-{round_}") for round_ in range(REFRESH_ROUNDS)]

    @contextmanager
    def refresher(index: int) -> Iterator[Callable[[int], str]]:
        with backend.open() as stores:
            service = token_service(stores, FixedClock(NOW + 1))
            client = stores.clients.get("client-1")
            assert client is not None

            def refresh(round_: int) -> str:
                try:
                    issued = service.refresh(client, refresh_token=values[round_], scope=None, resource=None)
                except InvalidGrant:
                    return "invalid_grant"
                return f"tokens {issued.access_token} {issued.refresh_token}"

            yield refresh

    outcomes = race(refresher, rounds=REFRESH_ROUNDS)
    print("ERRS", {o[:300] for r in outcomes for o in r if o.startswith("error")})
    print([[o[:200] for o in r if not o.startswith("tokens")] for r in outcomes])
    assert [[outcome.split()[0] for outcome in round_] for round_ in outcomes] == [REFRESH_OUTCOME] * REFRESH_ROUNDS
    with backend.open() as stores:
        bearer = BearerAuthenticator(access_tokens=stores.access_tokens, clock=FixedClock(NOW + 2), hasher=HASHER, policy=POLICY)
        for round_, round_outcomes in enumerate(outcomes):
            grant = stores.grants.get_grant(f"grant-{round_}")
            assert grant is not None and grant.is_revoked
            issued = [outcome.split()[1:] for outcome in round_outcomes if outcome.startswith("tokens")]
            # Two different successors, both of generation 1, and both dead with the grant.
            assert len({refresh for _, refresh in issued}) == 2
            assert all(refresh.startswith(f"mob_rt_grant-{round_}.1.") for _, refresh in issued)
            for access, refresh in issued:
                with pytest.raises(InvalidToken):
                    bearer.authenticate(access)
                found = stores.refresh_tokens.get_refresh_token(HASHER.hash(refresh))
                assert found is not None and found[0].revoked_at is not None


# -- the upstream refresh lease --------------------------------------------------------------------


class CountingIdentityProvider:
    """An upstream IdP whose refresh takes a while and is counted in memory shared by every
    process; each refresh answers a new access token named by its count."""

    name = "counting"

    def __init__(self, count: Synchronized[int]) -> None:
        self._count = count

    def authorization_url(self, *, state: str, nonce: str, code_challenge: str) -> str:
        raise AssertionError("not used")

    def exchange_code(self, *, code: str, code_verifier: str, nonce: str) -> UpstreamLogin:
        raise AssertionError("not used")

    def describe_error(self, error: str, description: str | None) -> str:
        raise AssertionError("not used")

    def refresh(self, refresh_token: str) -> UpstreamTokens:
        with self._count.get_lock():
            self._count.value += 1
            count = self._count.value
        time.sleep(UPSTREAM_REFRESH_SECONDS)
        return UpstreamTokens(
            access_token=f"upstream-at-{count}", refresh_token=f"upstream-rt-{count}", expires_at=int(time.time()) + 3600
        )


def test_eight_processes_needing_an_expired_upstream_token_make_one_upstream_refresh(backend: Backend) -> None:
    expired = make_upstream_tokens(expires_at=int(time.time()) - 10)
    with backend.open() as stores:
        stores.clients.add(public_client())
        for round_ in range(LEASE_ROUNDS):
            stores.grants.add_grant(make_grant(f"grant-{round_}"), expired)
    refreshes: Synchronized[int] = CONTEXT.Value("i", 0)

    @contextmanager
    def tool_call(index: int) -> Iterator[Callable[[int], str]]:
        with backend.open() as stores:
            service = UpstreamTokenService(
                grants=stores.grants,
                upstream_tokens=stores.upstream_tokens,
                identity_provider=CountingIdentityProvider(refreshes),
                clock=SystemClock(),
                tokens=SecretsTokenGenerator(),
            )
            yield lambda round_: service.access_token(f"grant-{round_}")

    outcomes = race(tool_call, rounds=LEASE_ROUNDS)
    # One refresh per round (per grant), and every process got its result.
    assert refreshes.value == LEASE_ROUNDS
    assert {outcome for round_ in outcomes for outcome in round_} == {f"upstream-at-{n}" for n in range(1, LEASE_ROUNDS + 1)}
    assert all(len(set(round_)) == 1 for round_ in outcomes)
    with backend.open() as stores:
        for round_, round_outcomes in enumerate(outcomes):
            stored = stores.upstream_tokens.get_upstream_tokens(f"grant-{round_}")
            assert stored is not None and stored.access_token == round_outcomes[0]
            # The lease was released.
            again = stores.upstream_tokens.acquire_upstream_refresh_lock(f"grant-{round_}", "check", NOW, NOW + 30)
            assert again


# -- revocation seen by every process --------------------------------------------------------------


def test_a_grant_revoked_in_one_process_is_refused_by_another_at_its_next_lookup(backend: Backend) -> None:
    access_value = ACCESS_TOKEN_PREFIX + "a" * 43
    with backend.open() as stores:
        stores.clients.add(public_client())
        stores.grants.add_grant(make_grant(scopes=("mcp:read",)), None)
        stores.access_tokens.add_access_token(
            AccessToken(
                token_hash=HASHER.hash(access_value),
                grant_id="grant-1",
                client_id="client-1",
                scopes=("mcp:read",),
                resource=RESOURCE,
                issued_at=NOW,
                expires_at=NOW + 3600,
            )
        )
    looked, revoked = CONTEXT.Event(), CONTEXT.Event()

    def lookup(bearer: BearerAuthenticator, stores: Stores) -> str:
        try:
            bearer.authenticate(access_value)
        except InvalidToken as exc:
            found = stores.access_tokens.get_access_token(HASHER.hash(access_value))
            assert found is not None
            return f"refused ({exc}; grant revoked at {found[1].revoked_at})"
        return "accepted"

    @contextmanager
    def instance(index: int) -> Iterator[Callable[[int], str]]:
        with backend.open() as stores:
            bearer = BearerAuthenticator(access_tokens=stores.access_tokens, clock=FixedClock(NOW + 5), hasher=HASHER, policy=POLICY)

            def resource_server(round_: int) -> str:
                before = lookup(bearer, stores)
                looked.set()
                assert revoked.wait(WAIT_SECONDS)
                return f"{before}, then {lookup(bearer, stores)}"

            def revoker(round_: int) -> str:
                assert looked.wait(WAIT_SECONDS)
                stores.grants.revoke_grant("grant-1", NOW + 3)
                revoked.set()
                return "revoked"

            yield resource_server if index == 0 else revoker

    [outcomes] = race(instance, processes=2)
    assert outcomes == [
        f"accepted, then refused (the access token was revoked; grant revoked at {NOW + 3})",
        "revoked",
    ]


def wait_until_someone_waits_for_a_lock(backend: Backend) -> None:
    """Until another session of the database waits for a lock we hold (on SQLite, which cannot
    tell, a moment: the test then still holds, only less sharply)."""
    if backend.name == "sqlite":
        time.sleep(0.5)
        return
    deadline = time.monotonic() + WAIT_SECONDS
    with psycopg.connect(backend.location, autocommit=True) as observer:
        while observer.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone() == (0,):
            assert time.monotonic() < deadline, "the revocation never waited for the refresh"
            time.sleep(0.01)


def test_a_refresh_and_a_revocation_of_its_grant_at_once_both_complete(backend: Backend) -> None:
    """The refresh grant's transaction (the token's row locked, then tokens issued from the grant)
    and revoke_grant (the grant, its access tokens, its refresh tokens) in another process take
    their locks in an order that cannot deadlock: both finish, and the revocation, coming second,
    covers the tokens the refresh issued."""
    with backend.open() as stores:
        stores.clients.add(public_client())
        value = seed_refresh_token(stores, "grant-1")
    locked, revoking = CONTEXT.Event(), CONTEXT.Event()
    access_value = ACCESS_TOKEN_PREFIX + "b" * 43
    successor = refresh_token_value(HASHER, grant_id="grant-1", generation=1, secret="s" * 43)

    @contextmanager
    def instance(index: int) -> Iterator[Callable[[int], str]]:
        with backend.open() as stores:

            def refresh(round_: int) -> str:
                # What TokenService.refresh does in its transaction, with a pause in the middle.
                with stores.unit_of_work.atomic():
                    found = stores.refresh_tokens.get_refresh_token(HASHER.hash(value))
                    assert found is not None and found[0].rotated_at is None
                    locked.set()
                    assert revoking.wait(WAIT_SECONDS)
                    wait_until_someone_waits_for_a_lock(backend)
                    assert stores.refresh_tokens.rotate_refresh_token(HASHER.hash(value), NOW + 1)
                    stores.access_tokens.add_access_token(
                        AccessToken(HASHER.hash(access_value), "grant-1", "client-1", ("mcp:read",), RESOURCE, NOW + 1, NOW + 3600)
                    )
                    stores.refresh_tokens.add_refresh_token(
                        replace(found[0], token_hash=HASHER.hash(successor), generation=1, issued_at=NOW + 1)
                    )
                return "refreshed"

            def revoke(round_: int) -> str:
                assert locked.wait(WAIT_SECONDS)
                revoking.set()
                stores.grants.revoke_grant("grant-1", NOW + 2)
                return "revoked"

            yield refresh if index == 0 else revoke

    [outcomes] = race(instance, processes=2)
    assert outcomes == ["refreshed", "revoked"]
    with backend.open() as stores:
        access = stores.access_tokens.get_access_token(HASHER.hash(access_value))
        assert access is not None and access[0].revoked_at == NOW + 2 and access[1].revoked_at == NOW + 2
        refresh = stores.refresh_tokens.get_refresh_token(HASHER.hash(successor))
        assert refresh is not None and refresh[0].revoked_at == NOW + 2


# -- PostgreSQL: two instances migrating at once ---------------------------------------------------

MIGRATION_ROUNDS = 5
LATEST = [migration.version for migration in POSTGRES_MIGRATIONS]


def test_two_instances_migrating_an_empty_postgresql_database_at_once_apply_each_version_once(
    postgres_server: str,  # noqa: F811
) -> None:
    databases = ExitStack()
    urls = [databases.enter_context(fresh_database(postgres_server)) for _ in range(MIGRATION_ROUNDS)]
    key = generate_key()

    @contextmanager
    def instance(index: int) -> Iterator[Callable[[int], str]]:
        def start(round_: int) -> str:
            # A new database object per round, as a new instance starting against a new database.
            database = PostgresDatabase(urls[round_], SecretBox([key]))
            try:
                return f"applied {database.migrate()}"
            finally:
                database.close()

        yield start

    with databases:
        outcomes = race(instance, rounds=MIGRATION_ROUNDS, processes=2)
        # No error: one applied every step, the other waited for its lock and found nothing to do.
        assert outcomes == [sorted(["applied []", f"applied {LATEST}"])] * MIGRATION_ROUNDS
        for url in urls:
            with psycopg.connect(url) as connection:
                rows = connection.execute("SELECT version, count(*) FROM schema_migrations GROUP BY version ORDER BY version")
                assert rows.fetchall() == [(version, 1) for version in LATEST]


def test_ensure_schema_gives_up_while_another_session_holds_the_migration_lock(
    postgres_url: str, caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    url = postgres_url
    database = PostgresDatabase(url, SecretBox([generate_key()]))
    try:
        with psycopg.connect(url, autocommit=True) as other:
            # Another instance migrating (a session-level lock on the same key, held until released).
            other.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
            with caplog.at_level(logging.WARNING):
                assert database.ensure_schema(busy_wait=0.3) is False
            assert "another instance is migrating the PostgreSQL schema" in caplog.text
            assert database.pending_migrations() == LATEST
            other.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
        assert database.ensure_schema(busy_wait=0.3) is True
        assert database.applied_migrations() == LATEST
    finally:
        database.close()
