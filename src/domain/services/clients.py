"""Finding the client behind a client_id: a stored client (DCR, RFC 7591; or created by an
operator), or an https URL naming a client ID metadata document
(draft-ietf-oauth-client-id-metadata-document-02 §5: fetched, validated and cached), under the
operator's registration policy (CLIENT_REGISTRATION).

The cached document is kept apart from the client's row: the row (which grants reference) is
created the first time the document is accepted and updated when it changes; a document that
expires, or cannot be fetched again, never deletes the client or anything issued to it."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Mapping

from ..client_documents import check_client_id_url, check_document, describe, is_url_client_id, parse_document, url_host
from ..errors import InvalidClient, OAuthError
from ..model import METADATA_DOCUMENT_CLIENT_KIND, Client
from ..policy import ServerPolicy
from ..ports import (
    CachedMetadataDocument,
    ClientMetadataFetcher,
    ClientRepository,
    Clock,
    MetadataDocumentStore,
    MetadataDocumentUnavailable,
    WebUrlParser,
)
from .registration import validate_client_metadata

log = logging.getLogger(__name__)

NOT_ACCEPTED = {
    "registered": "this server no longer accepts dynamically registered clients; connect the application again",
    "metadata_document": "this server does not accept client ID metadata documents",
    "operator": "this client is not accepted",
}


class ClientDirectory:
    """``for_authorization``: the client of an authorization request, whose document (if it has
    one) must be freshly fetched or cached fresh. ``for_token``: the client at the token,
    revocation and introspection endpoints, where a document that can no longer be fetched is
    used stale for a bounded time. Both raise ``InvalidClient`` saying what is wrong."""

    def __init__(
        self,
        *,
        clients: ClientRepository,
        documents: MetadataDocumentStore,
        fetcher: ClientMetadataFetcher,
        pinned: Mapping[str, Mapping[str, Any]],
        clock: Clock,
        policy: ServerPolicy,
        web_urls: WebUrlParser,
    ) -> None:
        self._clients = clients
        self._documents = documents
        self._fetcher = fetcher
        # Documents shipped with the project (Claude's), by client id.
        self._pinned = pinned
        self._clock = clock
        self._policy = policy
        self._web_urls = web_urls

    def for_authorization(self, client_id: str) -> Client:
        return self._find(client_id, stale_allowed=False)

    def for_token(self, client_id: str) -> Client:
        return self._find(client_id, stale_allowed=True)

    def _find(self, client_id: str, *, stale_allowed: bool) -> Client:
        if is_url_client_id(client_id):
            if not self._policy.metadata_documents_accepted:
                raise InvalidClient(NOT_ACCEPTED[METADATA_DOCUMENT_CLIENT_KIND])
            return self._document_client(client_id, stale_allowed=stale_allowed)
        client = self._clients.get(client_id)
        if client is None or client.is_metadata_document:
            raise InvalidClient("unknown client")
        _refuse_disabled(client)
        if client.kind not in self._policy.accepted_client_kinds:
            raise InvalidClient(NOT_ACCEPTED.get(client.kind, "this client is not accepted"))
        return client

    # -- client ID metadata documents -----------------------------------------------------------

    def _document_client(self, client_id: str, *, stale_allowed: bool) -> Client:
        rules = self._policy.metadata_documents
        check_client_id_url(client_id, allow_loopback=rules.allow_loopback)
        rules.check_host(client_id)
        stored = self._clients.get(client_id)
        if stored is not None and stored.kind != METADATA_DOCUMENT_CLIENT_KIND:
            raise InvalidClient("unknown client")
        if stored is not None:
            # Before any fetch: a disabled client makes this server contact nobody.
            _refuse_disabled(stored)
        if stale_allowed and stored is None:
            # The token, revocation and introspection endpoints serve clients that were
            # authorized before: a URL never seen at /authorize is unknown, and nobody can
            # make this server fetch from them.
            raise InvalidClient("unknown client")
        now = self._clock.now()
        return self._stored_client(stored, self._described_client(client_id, now, stale_allowed=stale_allowed), now)

    def _described_client(self, client_id: str, now: int, *, stale_allowed: bool) -> Client:
        """The client its document describes now, validated once: the document cached while
        fresh; else fetched (and cached if valid); else Claude's pinned copy; else, for
        refreshes only, the stale cached copy."""
        rules = self._policy.metadata_documents
        pinned = self._pinned.get(client_id)
        if rules.pinned_only:
            if pinned is None:
                raise InvalidClient("this server accepts only the client metadata documents it ships with")
            return self._validated(client_id, pinned)
        cached = self._documents.get_document(client_id)
        if cached is not None and cached.fresh_until > now:
            return self._validated(client_id, cached.document)
        host = url_host(client_id)
        try:
            fetched = self._fetcher.fetch(client_id)
            document = parse_document(fetched.body)
            described = self._validated(client_id, document)
        except (MetadataDocumentUnavailable, OAuthError) as exc:
            reason = str(exc) if isinstance(exc, MetadataDocumentUnavailable) else describe(exc)
            if pinned is not None:
                log.warning("client metadata document at %s unusable (%s): using the pinned copy", host, reason)
                return self._validated(client_id, pinned)
            if stale_allowed and cached is not None and cached.stale_until > now:
                log.warning("client metadata document at %s unusable (%s): using the copy fetched at %d", host, reason, cached.fetched_at)
                return self._validated(client_id, cached.document)
            raise InvalidClient(f"the client's metadata document at {host} could not be used: {reason}") from None
        # Only a valid document is cached; failures never are.
        self._documents.put_document(
            CachedMetadataDocument(
                client_id=client_id,
                document=document,
                fetched_at=now,
                fresh_until=now + rules.cache_lifetime(fetched.max_age),
                stale_until=now + rules.stale_ttl,
            )
        )
        return described

    def _validated(self, client_id: str, document: Mapping[str, Any]) -> Client:
        """The client a document describes, under today's rules (the allowlist may have changed
        since it was cached). Raises ``InvalidClientMetadata`` / ``InvalidRedirectUri``."""
        check_document(document, client_id)
        validated = validate_client_metadata(document, self._policy, self._web_urls, published=True)
        return validated.client(client_id, issued_at=0, kind=METADATA_DOCUMENT_CLIENT_KIND)

    def _stored_client(self, stored: Client | None, described: Client, now: int) -> Client:
        """The client's row, created or brought up to date with its document (rows written only
        when something changed: most lookups are reads)."""
        if stored is None:
            client = replace(described, issued_at=now)
        else:
            client = replace(
                described, issued_at=stored.issued_at, last_used_at=stored.last_used_at, disabled_at=stored.disabled_at
            )
            if client == stored:
                return stored
        self._clients.add(client)
        return client


def _refuse_disabled(client: Client) -> None:
    """An operator disabled the client (`clients disable`): no new authorization, no token."""
    if client.is_disabled:
        raise InvalidClient("this client is disabled")
