"""What token hash key rotation costs the bearer check (issue 11 §2), on SQLite.

    .venv-test/bin/python bench/bench_hash_keys.py [--tokens 20000] [--batches 9] [--lookups 5000]

One database, built through the project's own code (container, Seeder): access tokens hashed
under an older key OLD, under a newer key NEW, and in the form stored before hashes carried key
ids (the whole HMAC under OLD). Then it times BearerAuthenticator.authenticate (HMAC, lookup,
checks) batch by batch, alternating between the cases, and reports the median microseconds per
call of each case and its ratio to the first (a server with one key, every token under it: what
nearly every request is). Expected: a second key costs nothing for tokens under the first key
(one read); a token under the older key or of the old form, and an unknown token, cost one
more HMAC and read per key.
"""

from __future__ import annotations

import argparse
import hmac
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from benchlib import Seeder, open_container, print_header, print_table, server_environment

from mcp_oauth_bridge.domain.model import AccessToken
from mcp_oauth_bridge.domain.services.bearer import BearerAuthenticator

OLD_KEY = "o" * 43
NEW_KEY = "n" * 43


def seed(container_env: dict[str, str], count: int, *, legacy: bool = False) -> list[str]:
    """``count`` access tokens issued under the first key of ``container_env``; with ``legacy``,
    stored as the previous release stored them (the whole HMAC, no key id)."""
    container = open_container(container_env)
    seeder = Seeder(container)
    client = seeder.register_client()
    now = int(time.time())
    grant = seeder.new_grant(client.client_id, seeder.upstream_login(), now)
    container.grants().add_grant(grant, None)
    key = container.settings().token_hash_keys[0]
    values = []
    with container.unit_of_work().atomic():
        for _ in range(count):
            value, row = seeder.access_token(grant, now)
            if legacy:
                row = AccessToken(**{**row.__dict__, "token_hash": hmac.digest(key, value.encode(), "sha256").hex()})
            container.access_tokens().add_access_token(row)
            values.append(value)
    container.storage_admin().close()
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=20_000, help="tokens of each kind")
    parser.add_argument("--batches", type=int, default=9)
    parser.add_argument("--lookups", type=int, default=5_000, help="calls per case per batch")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mob-hash-keys-") as directory:
        base = {k: v for k, v in server_environment(Path(directory), "http://127.0.0.1:8000").items() if k != "TOKEN_HASH_KEY"}
        one_key = {**base, "TOKEN_HASH_KEYS": OLD_KEY}
        two_keys = {**base, "TOKEN_HASH_KEYS": f"{NEW_KEY},{OLD_KEY}"}
        print(f"building {3 * args.tokens:,} tokens ...", file=sys.stderr)
        under_old = seed(one_key, args.tokens)
        legacy = seed(one_key, args.tokens, legacy=True)
        under_new = seed(two_keys, args.tokens)
        unknown = [f"mob_at_unknown{n:08d}" + "x" * 30 for n in range(args.tokens)]

        one: BearerAuthenticator = open_container(one_key).bearer_authenticator()
        two: BearerAuthenticator = open_container(two_keys).bearer_authenticator()

        def accepted(bearer: BearerAuthenticator) -> Callable[[str], object]:
            return bearer.authenticate

        def refused(bearer: BearerAuthenticator) -> Callable[[str], object]:
            def call(token: str) -> object:
                try:
                    return bearer.authenticate(token)
                except Exception as exc:  # InvalidToken, as expected
                    return exc
            return call

        cases = [
            ("one key; token under it (before any rotation)", accepted(one), under_old),
            ("one key; token stored before key ids", accepted(one), legacy),
            ("two keys; token under the first (new) key", accepted(two), under_new),
            ("two keys; token under the older key", accepted(two), under_old),
            ("two keys; token stored before key ids", accepted(two), legacy),
            ("one key; unknown token (refused)", refused(one), unknown),
            ("two keys; unknown token (refused)", refused(two), unknown),
        ]
        samples: dict[str, list[float]] = {name: [] for name, _, _ in cases}
        for batch in range(args.batches):
            for name, call, values in cases:
                picked = [values[(batch * args.lookups + n) % len(values)] for n in range(args.lookups)]
                started = time.perf_counter()
                for value in picked:
                    call(value)
                samples[name].append((time.perf_counter() - started) / args.lookups * 1e6)
    print_header("bearer check under token hash key rotation (SQLite)", [("tokens of each kind", f"{args.tokens:,}"),
                 ("batches x calls", f"{args.batches} x {args.lookups:,}")])
    baseline = statistics.median(samples[cases[0][0]])
    rows = [
        (name, f"{statistics.median(samples[name]):.1f}", f"{statistics.median(samples[name]) / baseline:.2f}x")
        for name, _, _ in cases
    ]
    print_table(("case", "median us/call", "ratio"), rows, right=(False, True, True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
