"""Token hash key rotation (issue 11 §2): after TOKEN_HASH_KEYS gains a new first key, everything
issued under the older key keeps working (tokens, codes, consents under way, refresh-token reuse
detection), new values are hashed under the new key only, and a client secret or registration
access token is hashed again under the new key at its next use, so that the older key can go.
Values stored before hashes carried key ids (the previous release) are found and re-hashed too."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from mcp_oauth_bridge.adapters.identity.fake import FakeIdentityProvider
from mcp_oauth_bridge.domain.errors import InvalidClient, InvalidGrant, InvalidToken
from mcp_oauth_bridge.domain.ports import UpstreamIdentityError
from mcp_oauth_bridge.domain.security import TokenHasher, s256_challenge
from mcp_oauth_bridge.domain.services.tokens import ClientCredentials
from tests.fakes import FixedClock, SequentialTokenGenerator

from .conftest import HASH_KEY, World, build_world, query

NEW_KEY = b"the-new-token-hash-key-of-32-bytes"


def rotated(world: World) -> World:
    """The same installation restarted with TOKEN_HASH_KEYS=new,old."""
    return build_world(hash_keys=(NEW_KEY, HASH_KEY), restart_of=world)


def retired(world: World) -> World:
    """... and restarted again once the old key is removed."""
    return build_world(hash_keys=(NEW_KEY,), restart_of=world)


def test_tokens_issued_under_the_older_key_keep_working_and_new_ones_use_the_new_key(world: World) -> None:
    client = world.register()
    issued = world.login(client)
    after = rotated(world)

    assert after.bearer.authenticate(issued.access_token).client_id == client.client.client_id
    assert after.active(client, issued.access_token) and after.active(client, issued.refresh_token)
    refreshed = after.refresh(client, issued.refresh_token)
    # New tokens are stored under the new key only: the old configuration cannot find them ...
    with pytest.raises(InvalidToken):
        world.bearer.authenticate(refreshed.access_token)
    assert after.storage.access_tokens[TokenHasher(NEW_KEY).hash(refreshed.access_token)]
    # ... and once the old key is gone, they work while the old key's tokens do not.
    gone = retired(world)
    assert gone.bearer.authenticate(refreshed.access_token).client_id == client.client.client_id
    assert gone.refresh(client, refreshed.refresh_token).access_token
    with pytest.raises(InvalidToken):
        gone.bearer.authenticate(issued.access_token)


def test_revocation_under_the_older_key_still_revokes(world: World) -> None:
    client = world.register()
    issued = world.login(client)
    after = rotated(world)
    after.token_service.revoke(client.client, token=issued.refresh_token, token_type_hint=None)
    with pytest.raises(InvalidToken):
        after.bearer.authenticate(issued.access_token)
    with pytest.raises(InvalidGrant):
        after.refresh(client, issued.refresh_token)


def test_a_code_and_consents_under_way_at_the_rotation_complete_after_it(world: World) -> None:
    client = world.register()
    # A code issued before the restart is exchanged after it.
    code = world.authorize_and_get_code(client)
    after = rotated(world)
    assert after.exchange(client, code).access_token
    # ... once only: the replay is still recognised (and revokes what it gave).
    with pytest.raises(InvalidGrant, match="already used"):
        after.exchange(client, code)

    # A consent page shown before the restart is answered after it (CSRF token and browser
    # binding hashed under the old key) ...
    prompt = world.start(client)
    code = query(after.callback(after.approve(prompt)))["code"]
    assert after.exchange(client, code).access_token
    # ... and a sign-in whose upstream state was hashed under the old key completes after it.
    idp_url = world.approve(world.start(client))
    code = query(after.callback(idp_url))["code"]
    assert after.exchange(client, code).access_token


def test_reuse_of_a_forgotten_generation_under_the_older_key_still_revokes_the_grant(world: World) -> None:
    client = world.register()
    first = world.login(client)
    second = world.refresh(client, first.refresh_token)
    world.clock.advance(world.policy.refresh_grace_period + 1)
    world.refresh(client, second.refresh_token)
    # Generation 0 is no longer stored; only its tag (under the old key) says it is genuine.
    after = rotated(world)
    with pytest.raises(InvalidGrant):
        after.refresh(client, first.refresh_token)
    assert after.only_grant().is_revoked


def test_a_client_secret_is_hashed_again_under_the_new_key_at_its_next_use(world: World) -> None:
    client = world.register_confidential()
    assert client.client_secret is not None
    credentials = ClientCredentials(client.client.client_id, client.client_secret, "client_secret_post")
    with pytest.raises(InvalidClient):
        retired(world).client_auth.authenticate(credentials)

    after = rotated(world)
    assert after.client_auth.authenticate(credentials).client_id == client.client.client_id
    stored = world.storage.clients[client.client.client_id].secret_hash
    assert stored == TokenHasher(NEW_KEY).hash(client.client_secret)
    assert retired(world).client_auth.authenticate(credentials).client_id == client.client.client_id
    # A wrong secret rehashes nothing.
    with pytest.raises(InvalidClient):
        after.client_auth.authenticate(ClientCredentials(client.client.client_id, "wrong", "client_secret_post"))
    assert world.storage.clients[client.client.client_id].secret_hash == stored


def test_a_registration_access_token_is_hashed_again_under_the_new_key_at_its_next_use(world: World) -> None:
    client = world.register()
    token = client.registration_access_token
    assert token is not None
    with pytest.raises(InvalidToken):
        retired(world).registration.read(client.client.client_id, token)
    assert rotated(world).registration.read(client.client.client_id, token).client.client_id == client.client.client_id
    assert world.storage.clients[client.client.client_id].registration_token_hash == TokenHasher(NEW_KEY).hash(token)
    assert retired(world).registration.read(client.client.client_id, token).client.client_id == client.client.client_id


def legacy_hash(value: str) -> str:
    """How the previous release stored a hash: the whole HMAC-SHA256, with no key id."""
    return hmac.new(HASH_KEY, value.encode(), hashlib.sha256).hexdigest()


def test_values_stored_before_hashes_had_key_ids_are_found_and_rehashed(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(world.hasher, "hash", legacy_hash)
    client = world.register_confidential()
    issued = world.login(client)
    assert client.client_secret is not None
    assert world.storage.clients[client.client.client_id].secret_hash == legacy_hash(client.client_secret)
    assert legacy_hash(issued.access_token) in world.storage.access_tokens

    # The upgraded server, with the same key (TOKEN_HASH_KEY, a one-key list) ...
    upgraded = build_world(restart_of=world)
    assert upgraded.bearer.authenticate(issued.access_token).client_id == client.client.client_id
    credentials = ClientCredentials(client.client.client_id, client.client_secret, "client_secret_post")
    assert upgraded.client_auth.authenticate(credentials)
    assert upgraded.hasher.is_current(world.storage.clients[client.client.client_id].secret_hash)
    # ... and after a rotation as well.
    assert rotated(world).refresh(client, issued.refresh_token).access_token


def test_the_fake_identity_provider_signs_with_the_first_key_and_accepts_the_older_ones() -> None:
    clock, verifier = FixedClock(1_700_000_000), "v" * 43

    def idp(*keys: bytes) -> FakeIdentityProvider:
        return FakeIdentityProvider(public_url="http://127.0.0.1:8000", signing_keys=keys, clock=clock, tokens=SequentialTokenGenerator())

    login = idp(HASH_KEY).exchange_code(
        code=idp(HASH_KEY).issue_code(username="alice", email=None, name=None, nonce="n", code_challenge=s256_challenge(verifier)),
        code_verifier=verifier,
        nonce="n",
    )
    assert login.tokens.refresh_token is not None
    assert idp(NEW_KEY, HASH_KEY).refresh(login.tokens.refresh_token).access_token
    with pytest.raises(UpstreamIdentityError, match="signature"):
        idp(NEW_KEY).refresh(login.tokens.refresh_token)
