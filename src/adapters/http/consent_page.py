"""What the consent page (RFC 6749 §4.1.1) says about the client asking, by how much of it is known
to be true: RFC 6749 §10.2 (the person must be able to tell who is asking), RFC 7591 §5 (metadata a
client registered itself is self-asserted), draft-ietf-oauth-client-id-metadata-document (the
document's host is what the server verified, by fetching it from there).

- ``operator``: created by this server's operator: trusted, said so.
- ``metadata_document``: its client_id is the https URL of its document; that URL's host is shown
  as verified.
- anything else (Dynamic Client Registration): its name and ``client_uri`` are shown as
  self-declared and unverified, and the host the browser will be sent back to is the line that
  counts.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...domain.errors import OAuthError
from ...domain.model import Client
from ...domain.ports import WebUrlParser
from ...domain.services.authorization import ConsentPrompt
from ...domain.uris import RedirectDestination, redirect_destination
from .scope_descriptions import ScopeDescription, describe_scopes

TRUSTED_BY_OPERATOR = "operator"
VERIFIED_HOST = "verified_host"
SELF_DECLARED = "self_declared"
# The heading's name for a self-registered client that gave none.
UNNAMED_CLIENT = "An application that gave no name"


@dataclass(frozen=True)
class ConsentView:
    # How the client is known: TRUSTED_BY_OPERATOR, VERIFIED_HOST or SELF_DECLARED.
    trust: str
    # The name in the title and heading ("… wants to use your tools at …").
    client_label: str
    client_name: str | None
    # The self-declared client_uri of a self-registered client (text, never a link).
    client_uri: str | None
    # The host of a metadata document client's document, as a browser parses it.
    verified_host: RedirectDestination | None
    # Where the browser will be sent back to (the WHATWG parse of the redirect URI).
    destination: RedirectDestination
    scopes: tuple[ScopeDescription, ...]


def consent_view(prompt: ConsentPrompt, web_urls: WebUrlParser) -> ConsentView:
    client = prompt.client
    destination, scopes = prompt.destination, describe_scopes(prompt.request.scopes)
    trust, document_host = client_trust(client, web_urls)
    if trust == TRUSTED_BY_OPERATOR:
        return ConsentView(
            trust=TRUSTED_BY_OPERATOR,
            client_label=client.display_name,
            client_name=client.client_name,
            client_uri=None,
            verified_host=None,
            destination=destination,
            scopes=scopes,
        )
    if document_host is not None:
        return ConsentView(
            trust=VERIFIED_HOST,
            client_label=client.client_name or document_host.site,
            client_name=client.client_name,
            client_uri=None,
            verified_host=document_host,
            destination=destination,
            scopes=scopes,
        )
    client_uri = client.extra_metadata.get("client_uri")
    return ConsentView(
        trust=SELF_DECLARED,
        # Quoted: the name is only what the application calls itself.
        client_label=f"“{client.client_name}”" if client.client_name else UNNAMED_CLIENT,
        client_name=client.client_name,
        client_uri=client_uri if isinstance(client_uri, str) and client_uri else None,
        verified_host=None,
        destination=destination,
        scopes=scopes,
    )


def client_trust(client: Client, web_urls: WebUrlParser) -> tuple[str, RedirectDestination | None]:
    """How the client is known (TRUSTED_BY_OPERATOR, VERIFIED_HOST or SELF_DECLARED) and, when
    verified, the host its metadata document was fetched from."""
    if client.is_operator_created:
        return TRUSTED_BY_OPERATOR, None
    document_host = _document_host(client, web_urls) if client.is_metadata_document else None
    return (VERIFIED_HOST, document_host) if document_host is not None else (SELF_DECLARED, None)


def _document_host(client: Client, web_urls: WebUrlParser) -> RedirectDestination | None:
    """The host the client's metadata document was fetched from: its client_id's."""
    try:
        host = redirect_destination(client.client_id, web_urls)
    except OAuthError:
        # Not a URL a browser would parse: nothing is shown as verified.
        return None
    return None if host.app else host
