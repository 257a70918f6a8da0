"""The `mail` toolset: search, list and read the signed-in person's Outlook mail through
Microsoft Graph (delegated ``Mail.Read``), with the upstream access token of the tool's grant.

Results are short text blocks for the model plus structured content. Graph errors become tool
errors (``isError``); a 401 from Graph gets exactly one new upstream token and one retry;
throttling (429) is reported with its ``Retry-After`` and never retried here. The upstream
token is sent only to ``base_url`` (no redirects are followed) and never appears in results or
logs. ``InvalidToken`` / ``TemporarilyUnavailable`` from the token service propagate: they are
the MCP endpoint's 401 and 503, not tool errors.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import quote, urlencode, urlsplit

import requests

from ...domain.ports import Telemetry
from ...domain.telemetry import OUTCOME_ERROR, OUTCOME_OK, OUTCOME_REFUSED, OUTCOME_UNAVAILABLE, NoTelemetry
from ...domain.uris import is_loopback_host
from ...domain.tools import ToolContext, ToolResult, ToolSpec, argument_problem

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://graph.microsoft.com/v1.0"
MAIL_READ = "Mail.Read"

MAX_QUERY_LENGTH = 200
MAX_SEARCH_TOP = 25
MAX_LIST_TOP = 50
DEFAULT_TOP = 10
MAX_ID_LENGTH = 512
MAX_BODY_CHARS = 20_000
MAX_ERROR_DETAIL = 300
MAX_LISTED_RECIPIENTS = 10

WELL_KNOWN_FOLDERS = ("inbox", "sentitems", "drafts", "deleteditems", "archive", "junkemail")
# Graph ids are URL-safe base64 (letters, digits, '-', '_', '=' padding; '+' in some older
# forms); well-known folder names are letters. Nothing here can leave the path segment.
ID_PATTERN = re.compile(r"[A-Za-z0-9_=+-]+")

LIST_SELECT = "id,subject,from,receivedDateTime,bodyPreview,isRead,hasAttachments"
GET_SELECT = (
    "id,subject,from,toRecipients,ccRecipients,receivedDateTime,bodyPreview,body,"
    "isRead,hasAttachments,importance,webLink"
)
# Graph rejects $orderby on a property absent from $filter (InefficientFilter), so the unread
# filter starts with an always-true clause on the sort property, as Graph's guidance says.
UNREAD_FILTER = "receivedDateTime ge 1900-01-01T00:00:00Z and isRead eq false"

UNAVAILABLE = "Microsoft Graph is unavailable, try again"

MAIL_SEARCH = ToolSpec(
    name="mail_search",
    title="Search mail",
    description=(
        "Search the signed-in user's mailbox (all folders) in Microsoft Outlook. Matches sender, "
        "subject and body; KQL such as from:alice subject:invoice is accepted. Returns the newest "
        "matches with sender, subject, date, unread marker, preview and the message id for mail_get."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "query": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_QUERY_LENGTH,
                "description": "Words to search for (1 to 200 characters).",
            },
            "top": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_SEARCH_TOP,
                "default": DEFAULT_TOP,
                "description": "How many messages to return (1 to 25, default 10).",
            },
        },
        "required": ["query"],
        "additionalProperties": False,
    },
    required_scopes=(MAIL_READ,),
    read_only=True,
)

MAIL_LIST = ToolSpec(
    name="mail_list",
    title="List mail",
    description=(
        "List the newest messages in one of the signed-in user's mail folders: sender, subject, "
        "date, unread marker, preview and the message id for mail_get."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "folder": {
                "type": "string",
                "default": "inbox",
                "maxLength": MAX_ID_LENGTH,
                "description": (
                    "A well-known folder name (inbox, sentitems, drafts, deleteditems, archive, "
                    "junkemail) or a folder id. Default inbox."
                ),
            },
            "top": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_LIST_TOP,
                "default": DEFAULT_TOP,
                "description": "How many messages to return (1 to 50, default 10).",
            },
            "unread_only": {
                "type": "boolean",
                "default": False,
                "description": "Only unread messages. Default false.",
            },
        },
        "additionalProperties": False,
    },
    required_scopes=(MAIL_READ,),
    read_only=True,
)

MAIL_GET = ToolSpec(
    name="mail_get",
    title="Read a message",
    description=(
        "Read one message by its id (from mail_search or mail_list): sender, recipients, subject, "
        "date and the body as plain text. Does not mark the message as read."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "message_id": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_ID_LENGTH,
                "description": "The message id, exactly as mail_search or mail_list returned it.",
            },
        },
        "required": ["message_id"],
        "additionalProperties": False,
    },
    required_scopes=(MAIL_READ,),
    read_only=True,
)


class _GraphFailure(Exception):
    """A Graph call that ends the tool call with an error result (the message is for the model)."""


class GraphMailToolset:
    """Read-only Outlook mail tools over Microsoft Graph."""

    name = "mail"
    # What the identity provider must be asked for so these tools can call Graph.
    upstream_scopes: tuple[str, ...] = (MAIL_READ,)

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_BASE_URL,
        session: requests.Session | None = None,
        timeout: float = 15.0,
        telemetry: Telemetry | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"the Graph base URL must be an absolute http(s) URL, got {base_url!r}")
        if parts.scheme == "http" and not is_loopback_host(parts.hostname):
            raise ValueError(f"the Graph base URL must use https for a non-loopback host, got {base_url!r}")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError(f"the Graph base URL must not carry credentials, a query or a fragment, got {base_url!r}")
        self._base_url = base_url.rstrip("/")
        self._origin = (parts.scheme, parts.netloc.lower())
        self._session = session if session is not None else requests.Session()
        self._timeout = timeout
        self._telemetry: Telemetry = telemetry or NoTelemetry()
        self._monotonic = monotonic
        self._specs: dict[str, ToolSpec] = {spec.name: spec for spec in (MAIL_SEARCH, MAIL_LIST, MAIL_GET)}

    def tools(self) -> Sequence[ToolSpec]:
        return tuple(self._specs.values())

    def call(self, name: str, arguments: Mapping[str, Any], context: ToolContext) -> ToolResult:
        spec = self._specs.get(name)
        if spec is None:
            return ToolResult.error(f"Unknown tool: {name}")
        # ToolService checks this already; a direct caller gets the same answer.
        problem = argument_problem(spec.input_schema, arguments)
        if problem is not None:
            return ToolResult.error(f"Invalid arguments for {name}: {problem}")
        try:
            if name == "mail_search":
                return self._search(arguments, context)
            if name == "mail_list":
                return self._list(arguments, context)
            return self._get(arguments, context)
        except _GraphFailure as failure:
            return ToolResult.error(str(failure))

    # -- the tools -----------------------------------------------------------------------------

    def _search(self, arguments: Mapping[str, Any], context: ToolContext) -> ToolResult:
        query = " ".join(str(arguments["query"]).split())
        if not query:
            return ToolResult.error("Invalid arguments for mail_search: argument 'query' must not be empty")
        if len(query) > MAX_QUERY_LENGTH:
            return ToolResult.error(
                f"Invalid arguments for mail_search: argument 'query' must be at most {MAX_QUERY_LENGTH} characters"
            )
        top = int(arguments.get("top", DEFAULT_TOP))
        params = [("$search", _search_phrase(query)), ("$top", str(top)), ("$select", LIST_SELECT)]
        page = self._request(
            "mail_search",
            "/me/messages",
            params,
            context,
            # Graph's header for eventually consistent $search results; message search accepts it.
            extra_headers={"ConsistencyLevel": "eventual"},
            not_found="Mailbox not found: the signed-in account has no Exchange Online mailbox",
        )
        messages = _messages_of(page)
        more = bool(page.get("@odata.nextLink"))
        if messages:
            heading = f'{_count(len(messages), "message")} matching "{query}", newest first:'
        else:
            heading = f'No messages match "{query}".'
        text = _listing(heading, messages, more, f"raise top (up to {MAX_SEARCH_TOP}) or refine the search")
        structured = {"query": query, "messages": [_summary(m) for m in messages], "more_available": more}
        return ToolResult(text=text, structured=structured)

    def _list(self, arguments: Mapping[str, Any], context: ToolContext) -> ToolResult:
        folder = str(arguments.get("folder", "inbox")).strip() or "inbox"
        if folder.lower() in WELL_KNOWN_FOLDERS:
            folder = folder.lower()
        id_problem = _id_problem(folder)
        if id_problem is not None:
            return ToolResult.error(f"Invalid arguments for mail_list: argument 'folder' {id_problem}")
        top = int(arguments.get("top", DEFAULT_TOP))
        unread_only = bool(arguments.get("unread_only", False))
        params = [("$top", str(top)), ("$orderby", "receivedDateTime desc")]
        if unread_only:
            params.append(("$filter", UNREAD_FILTER))
        params.append(("$select", LIST_SELECT))
        page = self._request(
            "mail_list",
            f"/me/mailFolders/{quote(folder, safe='')}/messages",
            params,
            context,
            not_found=f"Mail folder not found: '{folder}' (use a well-known name such as inbox or a folder id)",
        )
        messages = _messages_of(page)
        more = bool(page.get("@odata.nextLink"))
        kind = "unread message" if unread_only else "message"
        if messages:
            heading = f"{_count(len(messages), kind)} in {folder}, newest first:"
        else:
            heading = f"No {kind}s in {folder}."
        text = _listing(heading, messages, more, f"raise top (up to {MAX_LIST_TOP})")
        structured = {
            "folder": folder,
            "unread_only": unread_only,
            "messages": [_summary(m) for m in messages],
            "more_available": more,
        }
        return ToolResult(text=text, structured=structured)

    def _get(self, arguments: Mapping[str, Any], context: ToolContext) -> ToolResult:
        message_id = str(arguments["message_id"]).strip()
        id_problem = _id_problem(message_id)
        if id_problem is not None:
            return ToolResult.error(f"Invalid arguments for mail_get: argument 'message_id' {id_problem}")
        message = self._request(
            "mail_get",
            f"/me/messages/{quote(message_id, safe='')}",
            [("$select", GET_SELECT)],
            context,
            not_found="Message not found: it may have been deleted or moved, or the id is wrong",
        )
        body, total, truncated = _body_text(message.get("body"))
        web_link = _text(message.get("webLink"))
        lines = [f"Subject: {_subject(message)}", f"From: {_sender(message)}"]
        to = _recipients(message.get("toRecipients"))
        cc = _recipients(message.get("ccRecipients"))
        if to:
            lines.append(f"To: {to}")
        if cc:
            lines.append(f"Cc: {cc}")
        lines.append(f"Received: {_when(message.get('receivedDateTime'))}")
        lines.append(f"Status: {_status(message)}")
        lines.append(f"id: {_text(message.get('id'))}")
        if web_link:
            lines.append(f"Open in Outlook: {web_link}")
        lines.append("")
        lines.append(body or "(empty body)")
        if truncated:
            lines.append("")
            lines.append(
                f"[Body truncated: showing the first {MAX_BODY_CHARS:,} of {total:,} characters."
                + (" Open the message in Outlook for the rest.]" if web_link else "]")
            )
        structured = dict(_summary(message))
        structured.update(
            to=_addresses(message.get("toRecipients")),
            cc=_addresses(message.get("ccRecipients")),
            importance=_text(message.get("importance")) or None,
            web_link=web_link or None,
            body=body,
            body_truncated=truncated,
        )
        return ToolResult(text="\n".join(lines), structured=structured)

    # -- Graph ---------------------------------------------------------------------------------

    def _request(
        self,
        operation: str,
        path: str,
        params: list[tuple[str, str]],
        context: ToolContext,
        *,
        not_found: str,
        extra_headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        # '$' and ',' stay literal as in Graph's documentation; everything else is percent-encoded
        # (spaces as %20, which Graph reads in $search and $filter).
        url = f"{self._base_url}{path}?{urlencode(params, quote_via=quote, safe='$,')}"
        token = context.upstream.access_token()
        response = self._measured_send(operation, url, token, extra_headers)
        if response.status_code == 401:
            # The token may have been revoked or expired early: get another one, once.
            token = context.upstream.access_token(rejected=token)
            response = self._measured_send(operation, url, token, extra_headers)
            if response.status_code == 401:
                code, detail = _graph_error(response, token)
                raise _GraphFailure(
                    "Microsoft Graph rejected the access token even after it was renewed"
                    f"{_detail(code, detail)}; sign in again or ask an administrator to check the app registration."
                )
        return self._outcome(response, token, not_found)

    def _measured_send(
        self, operation: str, url: str, token: str, extra_headers: Mapping[str, str] | None
    ) -> requests.Response:
        """``_send``, reported to the telemetry as an upstream call of provider "graph" (issue 11
        §4) with the tool's name and the outcome its status gives."""
        started = self._monotonic()
        outcome = OUTCOME_UNAVAILABLE
        try:
            response = self._send(url, token, extra_headers)
            status = response.status_code
            if 200 <= status < 300:
                outcome = OUTCOME_OK
            elif status != 429 and 400 <= status < 500:
                outcome = OUTCOME_REFUSED
            elif status < 429:
                outcome = OUTCOME_ERROR
            return response
        finally:
            self._telemetry.upstream_call("graph", operation, outcome, self._monotonic() - started)

    def _send(self, url: str, token: str, extra_headers: Mapping[str, str] | None) -> requests.Response:
        parts = urlsplit(url)
        if (parts.scheme, parts.netloc.lower()) != self._origin:
            # Only ever built from base_url; a bug here must not leak the token elsewhere.
            raise _GraphFailure("refusing to send the access token outside the Graph base URL")
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if extra_headers:
            headers.update(extra_headers)
        try:
            # No redirects: a redirect could carry the Authorization header to another host.
            return self._session.get(url, headers=headers, timeout=self._timeout, allow_redirects=False)
        except requests.Timeout:
            logger.warning("Microsoft Graph did not answer within %s seconds", self._timeout)
            raise _GraphFailure(f"{UNAVAILABLE} (no answer within {self._timeout:g} seconds).") from None
        except requests.RequestException as exc:
            logger.warning("Microsoft Graph could not be reached: %s", type(exc).__name__)
            raise _GraphFailure(f"{UNAVAILABLE} (it could not be reached).") from None

    def _outcome(self, response: requests.Response, token: str, not_found: str) -> dict[str, Any]:
        status = response.status_code
        if 200 <= status < 300:
            try:
                document = response.json()
            except ValueError:
                document = None
            if not isinstance(document, dict):
                logger.warning("Microsoft Graph answered HTTP %s with a body that is not a JSON object", status)
                raise _GraphFailure("Microsoft Graph returned an unexpected response; try again.")
            return document
        code, detail = _graph_error(response, token)
        request_id = response.headers.get("request-id", "")
        if status == 429 or status >= 500:
            logger.warning("Microsoft Graph answered HTTP %s (%s, request-id %s)", status, code or "-", request_id or "-")
        if status == 404:
            raise _GraphFailure(f"{not_found}{_detail(code, detail)}.")
        if status == 403:
            raise _GraphFailure(
                f"Microsoft Graph denied access{_detail(code, detail)}. Reading mail needs the delegated "
                f"permission {MAIL_READ}: the app registration must include it, the user (or an administrator) "
                "must have consented to it, and the account needs a mailbox it may read."
            )
        if status == 429:
            wait = _retry_after(response.headers.get("Retry-After"))
            when = f"retry after {wait} seconds" if wait is not None else "retry in a little while"
            raise _GraphFailure(f"Graph is throttling requests; {when}{_detail(code, detail)}.")
        if status >= 500:
            wait = _retry_after(response.headers.get("Retry-After"))
            later = f" in {wait} seconds" if wait is not None else ""
            raise _GraphFailure(f"{UNAVAILABLE}{later} (HTTP {status}{', ' + code if code else ''}).")
        if 300 <= status < 400:
            raise _GraphFailure(f"Microsoft Graph answered with an unexpected redirect (HTTP {status}).")
        if status == 400:
            raise _GraphFailure(f"Microsoft Graph rejected the request{_detail(code, detail)}.")
        raise _GraphFailure(f"Microsoft Graph answered HTTP {status}{_detail(code, detail)}.")


# -- Graph answers -------------------------------------------------------------------------------


def _graph_error(response: requests.Response, token: str) -> tuple[str, str]:
    """Graph's ``{"error": {"code", "message"}}``, shortened and without the token."""
    try:
        document = response.json()
    except ValueError:
        return "", ""
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict):
        return "", ""
    code = _text(error.get("code"))
    message = " ".join(_text(error.get("message")).split())
    if len(message) > MAX_ERROR_DETAIL:
        message = message[: MAX_ERROR_DETAIL - 1].rstrip() + "…"
    if token:
        code, message = code.replace(token, "[token]"), message.replace(token, "[token]")
    return code, message


def _detail(code: str, message: str) -> str:
    if code and message:
        return f" ({code}: {message})"
    if code or message:
        return f" ({code or message})"
    return ""


def _retry_after(value: str | None) -> int | None:
    """``Retry-After`` as whole seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0, round(moment.timestamp() - time.time()))


def _messages_of(page: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    value = page.get("value")
    if not isinstance(value, list):
        raise _GraphFailure("Microsoft Graph returned an unexpected response (no message list); try again.")
    return [item for item in value if isinstance(item, dict)]


# -- arguments -----------------------------------------------------------------------------------


def _search_phrase(query: str) -> str:
    """Graph wants ``$search="..."``; quotes and backslashes inside are escaped with a backslash."""
    escaped = query.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _id_problem(value: str) -> str | None:
    if not value:
        return "must not be empty"
    if len(value) > MAX_ID_LENGTH:
        return f"must be at most {MAX_ID_LENGTH} characters"
    if not ID_PATTERN.fullmatch(value):
        return "must be a well-known folder name or an id as Graph returns it (letters, digits, '-', '_', '=', '+')"
    return None


# -- rendering -----------------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _address(entry: Any) -> dict[str, str]:
    email = entry.get("emailAddress") if isinstance(entry, dict) else None
    if not isinstance(email, dict):
        return {"name": "", "address": ""}
    return {"name": _text(email.get("name")).strip(), "address": _text(email.get("address")).strip()}


def _display(person: Mapping[str, str]) -> str:
    name, address = person["name"], person["address"]
    if name and address and name.lower() != address.lower():
        return f"{name} <{address}>"
    return address or name or "(unknown sender)"


def _sender(message: Mapping[str, Any]) -> str:
    return _display(_address(message.get("from")))


def _addresses(entries: Any) -> list[dict[str, str]]:
    if not isinstance(entries, list):
        return []
    return [_address(entry) for entry in entries]


def _recipients(entries: Any) -> str:
    people = _addresses(entries)
    shown = ", ".join(_display(person) for person in people[:MAX_LISTED_RECIPIENTS])
    if len(people) > MAX_LISTED_RECIPIENTS:
        shown += f" and {len(people) - MAX_LISTED_RECIPIENTS} more"
    return shown


def _subject(message: Mapping[str, Any]) -> str:
    return " ".join(_text(message.get("subject")).split()) or "(no subject)"


def _when(value: Any) -> str:
    """Graph's ISO 8601 UTC timestamp as ``2024-05-02 08:15 UTC``."""
    text = _text(value)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text or "(unknown date)"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _status(message: Mapping[str, Any]) -> str:
    marks = ["read" if message.get("isRead") is True else "unread"]
    if message.get("hasAttachments") is True:
        marks.append("has attachments")
    importance = _text(message.get("importance"))
    if importance and importance.lower() != "normal":
        marks.append(f"{importance.lower()} importance")
    return ", ".join(marks)


def _preview(message: Mapping[str, Any]) -> str:
    return _clean_inline(_text(message.get("bodyPreview")))


def _summary(message: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": _text(message.get("id")),
        "subject": _text(message.get("subject")),
        "from": _address(message.get("from")),
        "received": _text(message.get("receivedDateTime")),
        "preview": _preview(message),
        "is_read": message.get("isRead") is True,
        "has_attachments": message.get("hasAttachments") is True,
    }


def _listing(heading: str, messages: Sequence[Mapping[str, Any]], more: bool, how_to_see_more: str) -> str:
    blocks = [heading]
    for number, message in enumerate(messages, start=1):
        marker = "[unread] " if message.get("isRead") is not True else ""
        attachments = " · has attachments" if message.get("hasAttachments") is True else ""
        lines = [
            f"{number}. {marker}{_subject(message)}",
            f"   From: {_sender(message)}",
            f"   Received: {_when(message.get('receivedDateTime'))}{attachments}",
        ]
        preview = _preview(message)
        if preview:
            lines.append(f"   Preview: {preview}")
        lines.append(f"   id: {_text(message.get('id'))}")
        blocks.append("\n".join(lines))
    if more:
        blocks.append(f"More messages available; {how_to_see_more} to see them.")
    return "\n\n".join(blocks)


# -- HTML to text --------------------------------------------------------------------------------

# Invisible characters marketing mail pads previews with.
INVISIBLE = re.compile("[\u00ad\u034f\u200b-\u200d\u2060\ufeff]")
SKIPPED_TAGS = frozenset({"script", "style", "title", "template", "head"})
# Tags that start and end a line of their own, and those that stand apart as paragraphs.
BLOCK_TAGS = frozenset(
    "div li ul ol tr thead tbody tfoot section article header footer address center dl dt dd form "
    "fieldset figure figcaption main nav aside".split()
)
PARAGRAPH_TAGS = frozenset("p h1 h2 h3 h4 h5 h6 blockquote pre table hr".split())
# What may appear inside <head>; anything else means the head was left open and has ended.
HEAD_TAGS = frozenset("meta link title style script base noscript template".split())
MAX_LINK_LENGTH = 300


class _TextExtractor(HTMLParser):
    """Readable text from an HTML mail body: no tags, scripts or styles; line breaks where the
    layout had them; entities decoded; links kept as ``text <url>``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._parts: list[str] = []
        self._skipping: list[str] = []
        self._pre = 0
        self._links: list[tuple[str | None, int]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            # An unclosed <head> ends where the body begins.
            self._skipping = [t for t in self._skipping if t != "head"]
            return
        if self._skipping == ["head"] and tag not in HEAD_TAGS:
            self._skipping = []
        if tag in SKIPPED_TAGS:
            self._skipping.append(tag)
            return
        if self._skipping:
            return
        if tag == "br":
            self._parts.append("\n")
        elif tag == "li":
            self._line_break(1)
            self._parts.append("- ")
        elif tag in BLOCK_TAGS:
            self._line_break(1)
        elif tag in PARAGRAPH_TAGS:
            self._line_break(2)
            if tag == "pre":
                self._pre += 1
        elif tag in ("td", "th"):
            self._parts.append(" ")
        elif tag == "img":
            alt = " ".join((dict(attrs).get("alt") or "").split())
            if alt:
                self._parts.append(f"[{alt}]")
        elif tag == "a":
            self._links.append((dict(attrs).get("href"), len(self._parts)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # <br/>, <hr/>, <img/>: a start without content; <script/> must not open a skipped region.
        if tag in SKIPPED_TAGS or tag == "a":
            return
        self.handle_starttag(tag, attrs)
        if tag == "pre" and not self._skipping:
            self._pre = max(0, self._pre - 1)

    def handle_endtag(self, tag: str) -> None:
        if tag in SKIPPED_TAGS:
            if tag in self._skipping:
                while self._skipping and self._skipping.pop() != tag:
                    pass
            return
        if self._skipping:
            return
        if tag in BLOCK_TAGS:
            self._line_break(1)
        elif tag in PARAGRAPH_TAGS:
            self._line_break(2)
            if tag == "pre":
                self._pre = max(0, self._pre - 1)
        elif tag == "a" and self._links:
            href, start = self._links.pop()
            self._close_link(href, start)

    def _line_break(self, wanted: int) -> None:
        """End the current line (``wanted`` 1) or paragraph (2) unless the text already does."""
        have = 0
        for part in reversed(self._parts):
            for char in reversed(part):
                if char == "\n":
                    have += 1
                elif not char.isspace():
                    break
            else:
                continue
            break
        else:
            # Nothing but whitespace so far: no leading blank lines.
            return
        if have < wanted:
            self._parts.append("\n" * (wanted - have))

    def _close_link(self, href: str | None, start: int) -> None:
        href = (href or "").strip()
        if not href.lower().startswith(("http://", "https://")) or len(href) > MAX_LINK_LENGTH:
            return
        label = " ".join("".join(self._parts[start:]).split())
        if label.rstrip("/") != href.rstrip("/"):
            self._parts.append(f" <{href}>")

    def handle_data(self, data: str) -> None:
        if self._skipping:
            return
        if self._pre:
            self._parts.append(data)
        else:
            # HTML collapses whitespace (source line breaks are not line breaks).
            self._parts.append(re.sub(r"\s+", " ", data))

    def text(self) -> str:
        return "".join(self._parts)


def html_to_text(markup: str) -> str:
    """An HTML mail body as plain text (tags, scripts and styles dropped, entities decoded)."""
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    return _tidy(parser.text())


def _tidy(text: str) -> str:
    """Trim every line, drop invisible characters, and keep at most one blank line in a row."""
    text = INVISIBLE.sub("", text.replace("\r\n", "\n").replace("\r", "\n")).replace("\xa0", " ")
    lines = [re.sub(r"[ \t\f\v]+", " ", line).strip() for line in text.split("\n")]
    tidy: list[str] = []
    for line in lines:
        if line or (tidy and tidy[-1]):
            tidy.append(line)
    return "\n".join(tidy).strip()


def _clean_inline(text: str) -> str:
    return " ".join(INVISIBLE.sub("", text).split())


def _body_text(body: Any) -> tuple[str, int, bool]:
    """The message body as text, capped: (text, full length, whether it was cut)."""
    if not isinstance(body, dict):
        return "", 0, False
    content = _text(body.get("content"))
    if _text(body.get("contentType")).lower() == "html":
        text = html_to_text(content)
    else:
        text = _tidy(content)
    total = len(text)
    if total <= MAX_BODY_CHARS:
        return text, total, False
    return text[:MAX_BODY_CHARS].rstrip(), total, True
