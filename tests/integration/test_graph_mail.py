"""The Microsoft Graph mail toolset against `responses` doubles shaped like Graph's v1.0 answers:
message lists (with @odata.context / @odata.nextLink), single messages with HTML bodies, and
Graph's error bodies (404, 401, 403, 429 with Retry-After, 5xx), plus the one-refresh-on-401
path, id injection attempts, and the schemas run through the domain's ToolService."""

from __future__ import annotations

import json
import logging
import re
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator, cast
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import requests
import responses

from mcp_oauth_bridge.adapters.http.mcp_protocol import tool_definition
from mcp_oauth_bridge.adapters.tools.graph_mail import (
    LIST_SELECT,
    MAX_BODY_CHARS,
    UNREAD_FILTER,
    GraphMailToolset,
    html_to_text,
)
from mcp_oauth_bridge.domain.errors import InsufficientScope, InvalidToken, TemporarilyUnavailable
from mcp_oauth_bridge.domain.model import AccessContext, Grant
from mcp_oauth_bridge.domain.ports import Toolset
from mcp_oauth_bridge.domain.services.tools import ToolService
from mcp_oauth_bridge.domain.services.upstream import UpstreamTokenService
from mcp_oauth_bridge.domain.tools import ToolContext, ToolResult
from tests.fakes import RecordingTelemetry

BASE = "https://graph.microsoft.com/v1.0"
TOKEN = "eyJ0eXAiOiJKV1QiLCJub25jZSI6IkZJUlNUIn0.eyJhdWQiOiIwMDAwMDAwMy1maXJzdCJ9.first-signature"
RENEWED = "eyJ0eXAiOiJKV1QiLCJub25jZSI6IlNFQ09ORCJ9.eyJhdWQiOiIwMDAwMDAwMy1zZWNvbmQifQ.second-signature"
TOKENS = (TOKEN, RENEWED)

ID_1 = "AAMkAGVmMDEzMTM4LTZmYWUtNDdkNC1hMDZiLTU1OGY5OTZhYmY4OABGAAAAAAAiQ8W967B7TKBjgx9rVEURBwAiIsqMbYjsT5e-T7KzowPTAAAAAAEMAAAiIsqMbYjsT5e-T7KzowPTAAAYbvZDAAA="
ID_2 = "AAMkAGVmMDEzMTM4LTZmYWUtNDdkNC1hMDZiLTU1OGY5OTZhYmY4OABGAAAAAAAiQ8W967B7TKBjgx9rVEURBwAiIsqMbYjsT5e-T7KzowPTAAAAAAEMAAAiIsqMbYjsT5e-T7KzowPTAAAYbvZEAAA="
FOLDER_ID = "AAMkAGVmMDEzMTM4LTZmYWUtNDdkNC1hMDZiLTU1OGY5OTZhYmY4OAAuAAAAAAAiQ8W967B7TKBjgx9rVEURAQAiIsqMbYjsT5e-T7KzowPTAAAAAAEMAAA="
WEB_LINK = "https://outlook.office365.com/owa/?ItemID=AAMkAGVmMDEzMTM4&exvsurl=1&viewmodel=ReadMessageItem"


# -- Graph-shaped payloads -------------------------------------------------------------------------


def summary_item(
    message_id: str = ID_1,
    *,
    subject: str = "Q3 numbers",
    name: str = "Adele Vance",
    address: str = "AdeleV@contoso.onmicrosoft.com",
    received: str = "2024-05-02T08:15:30Z",
    preview: str = "Hi team, the Q3 numbers are attached.\r\n\r\nPlease review before Friday.",
    is_read: bool = False,
    has_attachments: bool = True,
) -> dict[str, Any]:
    return {
        "@odata.etag": 'W/"CQAAABYAAAAiIsqMbYjsT5e/T7KzowPTAAAYdEmu"',
        "id": message_id,
        "subject": subject,
        "from": {"emailAddress": {"name": name, "address": address}},
        "receivedDateTime": received,
        "bodyPreview": preview,
        "isRead": is_read,
        "hasAttachments": has_attachments,
        "importance": "normal",
        "webLink": WEB_LINK,
    }


def message_list(*items: dict[str, Any], next_link: str | None = None) -> dict[str, Any]:
    page: dict[str, Any] = {
        "@odata.context": f"{BASE}/$metadata#users('48d31887-5fad-4d73-a9f5-3c356e68a038')/messages"
        "(id,subject,from,receivedDateTime,bodyPreview,isRead,hasAttachments)",
        "value": list(items),
    }
    if next_link:
        page["@odata.nextLink"] = next_link
    return page


HTML_BODY = """<html><head>
<meta http-equiv="Content-Type" content="text/html; charset=utf-8">
<style type="text/css" style="display:none;"> P {margin-top:0;margin-bottom:0;} .secret-css {color:red} </style>
<title>ignored title</title>
<script>var secretScript = 1;</script>
</head>
<body dir="ltr">
<div class="elementToProof" style="font-family: Aptos, Aptos_EmbeddedFont, Calibri, Helvetica, sans-serif;">Hi&nbsp;team,</div>
<div class="elementToProof"><br></div>
<div class="elementToProof">The Q3 numbers are &lt;attached&gt; &amp; final.<br>Revenue:&#32;&euro;1.2M</div>
<p>Agenda:</p>
<ul><li>Revenue</li><li>Costs &mdash; caf&eacute;</li></ul>
<p>Join: <a href="https://teams.microsoft.com/l/meetup-join/19%3ameeting">Join the meeting now</a></p>
<p></p><p></p><p></p>
<div>Thanks,<br/>Adele</div>
<img src="cid:logo" alt="Contoso logo">
</body></html>"""


def full_message(body: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    message = summary_item(**overrides)
    message.update(
        {
            "@odata.context": f"{BASE}/$metadata#users('48d31887-5fad-4d73-a9f5-3c356e68a038')/messages(id,subject,body)/$entity",
            "toRecipients": [
                {"emailAddress": {"name": "Megan Bowen", "address": "MeganB@contoso.onmicrosoft.com"}},
                {"emailAddress": {"name": "alex@contoso.com", "address": "alex@contoso.com"}},
            ],
            "ccRecipients": [],
            "importance": "high",
            "body": body if body is not None else {"contentType": "html", "content": HTML_BODY},
        }
    )
    return message


def graph_error(code: str, message: str) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": "2024-05-02T08:20:00",
                "request-id": "5f2b5c4e-6d0b-4a4b-9e0a-1c3b7f1e9a11",
                "client-request-id": "5f2b5c4e-6d0b-4a4b-9e0a-1c3b7f1e9a11",
            },
        }
    }


# -- fakes and fixtures ----------------------------------------------------------------------------


class FakeUpstream:
    """The grant's upstream access: hands out TOKEN, then RENEWED when TOKEN is rejected."""

    def __init__(self, *, fail_with: Exception | None = None, fail_on_renewal: Exception | None = None) -> None:
        self.rejected: list[str | None] = []
        self._fail_with = fail_with
        self._fail_on_renewal = fail_on_renewal

    def access_token(self, *, rejected: str | None = None) -> str:
        self.rejected.append(rejected)
        if self._fail_with is not None:
            raise self._fail_with
        if rejected is None:
            return TOKEN
        if self._fail_on_renewal is not None:
            raise self._fail_on_renewal
        return RENEWED


class StubTokenService:
    """What ToolService needs from UpstreamTokenService: a token per grant."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    def access_token(self, grant_id: str, *, rejected: str | None = None) -> str:
        self.calls.append((grant_id, rejected))
        return TOKEN if rejected is None else RENEWED


def access_context(*scopes: str) -> AccessContext:
    grant = Grant(
        grant_id="grant-1",
        client_id="client-1",
        subject="tid:oid",
        claims={"name": "Megan Bowen"},
        scopes=scopes,
        resource="https://mcp.example/mcp",
        created_at=1_700_000_000,
    )
    return AccessContext(grant=grant, client_id="client-1", scopes=scopes, resource=grant.resource, expires_at=1_700_003_600)


@pytest.fixture
def graph() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def upstream() -> FakeUpstream:
    return FakeUpstream()


@pytest.fixture
def context(upstream: FakeUpstream) -> ToolContext:
    return ToolContext(access=access_context("Mail.Read"), upstream=upstream)


@pytest.fixture
def mail() -> GraphMailToolset:
    return GraphMailToolset()


def run(mail: GraphMailToolset, context: ToolContext, name: str, **arguments: Any) -> ToolResult:
    result = mail.call(name, arguments, context)
    assert_no_token(result)
    return result


def assert_no_token(result: ToolResult) -> None:
    rendered = result.text + json.dumps(result.structured)
    for token in TOKENS:
        assert token not in rendered
        assert token.split(".")[-1] not in rendered


def url_of(call: Any) -> str:
    return str(call.request.url)


def query_of(call: Any) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url_of(call)).query, keep_blank_values=True)


def path_of(call: Any) -> str:
    """The request path as sent (percent-encoding kept)."""
    return urlsplit(url_of(call)).path


MESSAGES = re.compile(re.escape(BASE) + r"/me/messages(\?.*)?$")
ONE_MESSAGE = re.compile(re.escape(BASE) + r"/me/messages/[^/?]+(\?.*)?$")
FOLDER_MESSAGES = re.compile(re.escape(BASE) + r"/me/mailFolders/[^/?]+/messages(\?.*)?$")


# -- declaration -----------------------------------------------------------------------------------


def test_declares_three_read_only_tools_needing_mail_read(mail: GraphMailToolset) -> None:
    assert isinstance(mail, Toolset)
    assert mail.name == "mail"
    assert GraphMailToolset.upstream_scopes == ("Mail.Read",)
    specs = mail.tools()
    assert [spec.name for spec in specs] == ["mail_search", "mail_list", "mail_get"]
    for spec in specs:
        assert spec.required_scopes == ("Mail.Read",)
        assert spec.read_only is True
        assert spec.input_schema["type"] == "object"
        assert spec.input_schema["additionalProperties"] is False
        assert spec.description and spec.title
        definition = tool_definition(spec)
        assert definition["annotations"]["readOnlyHint"] is True
        json.dumps(definition)
    search, listing, get = specs
    assert search.input_schema["required"] == ["query"]
    assert search.input_schema["properties"]["top"] == {
        **search.input_schema["properties"]["top"],
        "type": "integer",
        "minimum": 1,
        "maximum": 25,
        "default": 10,
    }
    assert search.input_schema["properties"]["query"]["maxLength"] == 200
    assert listing.input_schema.get("required", []) == []
    assert listing.input_schema["properties"]["top"]["maximum"] == 50
    assert listing.input_schema["properties"]["folder"]["default"] == "inbox"
    assert listing.input_schema["properties"]["unread_only"] == {
        **listing.input_schema["properties"]["unread_only"],
        "type": "boolean",
        "default": False,
    }
    assert get.input_schema["required"] == ["message_id"]


@pytest.mark.parametrize(
    "base_url",
    ["https://graph.microsoft.com/v1.0/", "https://graph.microsoft.us/v1.0", "http://127.0.0.1:8765/v1.0", "http://localhost:1/v1.0"],
)
def test_accepted_base_urls(base_url: str) -> None:
    GraphMailToolset(base_url=base_url)


@pytest.mark.parametrize(
    "base_url",
    ["http://graph.example.com/v1.0", "ftp://graph.microsoft.com", "graph.microsoft.com/v1.0", "https://user:pw@graph.microsoft.com/v1.0", "https://graph.microsoft.com/v1.0?x=1"],
)
def test_rejected_base_urls(base_url: str) -> None:
    with pytest.raises(ValueError, match="Graph base URL"):
        GraphMailToolset(base_url=base_url)


# -- mail_search -----------------------------------------------------------------------------------


def test_search_defaults_query_parameters_and_headers(
    graph: responses.RequestsMock, mail: GraphMailToolset, context: ToolContext, upstream: FakeUpstream
) -> None:
    graph.add(responses.GET, MESSAGES, json=message_list(summary_item(), summary_item(ID_2, subject="Re: lunch", is_read=True, has_attachments=False)))
    result = run(mail, context, "mail_search", query="quarterly report")

    assert not result.is_error, result.text
    assert len(graph.calls) == 1
    call = graph.calls[0]
    assert path_of(call) == "/v1.0/me/messages"
    assert query_of(call) == {"$search": ['"quarterly report"'], "$top": ["10"], "$select": [LIST_SELECT]}
    assert "$search=%22quarterly%20report%22" in url_of(call)
    assert call.request.headers["ConsistencyLevel"] == "eventual"
    assert call.request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert upstream.rejected == [None]

    assert result.text.startswith('2 messages matching "quarterly report", newest first:')
    assert "1. [unread] Q3 numbers" in result.text
    assert "From: Adele Vance <AdeleV@contoso.onmicrosoft.com>" in result.text
    assert "Received: 2024-05-02 08:15 UTC · has attachments" in result.text
    assert "Preview: Hi team, the Q3 numbers are attached. Please review before Friday." in result.text
    assert f"id: {ID_1}" in result.text
    assert "2. Re: lunch" in result.text and "[unread] Re: lunch" not in result.text
    assert "More messages available" not in result.text
    assert result.structured is not None
    assert result.structured["more_available"] is False
    assert result.structured["messages"][0] == {
        "id": ID_1,
        "subject": "Q3 numbers",
        "from": {"name": "Adele Vance", "address": "AdeleV@contoso.onmicrosoft.com"},
        "received": "2024-05-02T08:15:30Z",
        "preview": "Hi team, the Q3 numbers are attached. Please review before Friday.",
        "is_read": False,
        "has_attachments": True,
    }
    assert result.structured["messages"][1]["is_read"] is True


def test_search_top_and_quote_escaping(graph: responses.RequestsMock, mail: GraphMailToolset, context: ToolContext) -> None:
    graph.add(responses.GET, MESSAGES, json=message_list())
    result = run(mail, context, "mail_search", query='  subject:"budget  2024"  back\\slash ', top=25)
    assert not result.is_error
    assert query_of(graph.calls[0])["$search"] == ['"subject:\\"budget 2024\\" back\\\\slash"']
    assert query_of(graph.calls[0])["$top"] == ["25"]
    assert result.text == 'No messages match "subject:"budget 2024" back\\slash".'
    assert result.structured == {"query": 'subject:"budget 2024" back\\slash', "messages": [], "more_available": False}


@pytest.mark.parametrize("query, problem", [("   ", "must not be empty"), ("x" * 201, "at most 200 characters"), ("", "must not be empty")])
def test_search_rejects_empty_and_long_queries_without_calling_graph(
    graph: responses.RequestsMock, mail: GraphMailToolset, context: ToolContext, upstream: FakeUpstream, query: str, problem: str
) -> None:
    result = run(mail, context, "mail_search", query=query)
    assert result.is_error
    assert problem in result.text
    assert len(graph.calls) == 0
    assert upstream.rejected == []


def test_search_paging_note_without_following_the_next_link(
    graph: responses.RequestsMock, mail: GraphMailToolset, context: ToolContext
) -> None:
    next_link = f"{BASE}/me/messages?$search=%22report%22&$top=1&$skiptoken=MSZZVlFCSkFBQUFBQUFBQUFBQQ%3d%3d"
    graph.add(responses.GET, MESSAGES, json=message_list(summary_item(), next_link=next_link))
    result = run(mail, context, "mail_search", query="report", top=1)
    assert len(graph.calls) == 1
    assert result.text.startswith('1 message matching "report"')
    assert result.text.endswith("More messages available; raise top (up to 25) or refine the search to see them.")
    assert "skiptoken" not in result.text
    assert result.structured is not None and result.structured["more_available"] is True


# -- mail_list -------------------------------------------------------------------------------------


def test_list_defaults(graph: responses.RequestsMock, mail: GraphMailToolset, context: ToolContext) -> None:
    graph.add(responses.GET, FOLDER_MESSAGES, json=message_list(summary_item()))
    result = run(mail, context, "mail_list")
    assert not result.is_error, result.text
    call = graph.calls[0]
    assert path_of(call) == "/v1.0/me/mailFolders/inbox/messages"
    assert query_of(call) == {"$top": ["10"], "$orderby": ["receivedDateTime desc"], "$select": [LIST_SELECT]}
    assert "ConsistencyLevel" not in call.request.headers
    assert call.request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert result.text.startswith("1 message in inbox, newest first:")
    assert "[unread] Q3 numbers" in result.text
    assert result.structured is not None
    assert result.structured["folder"] == "inbox" and result.structured["unread_only"] is False
    assert [m["id"] for m in result.structured["messages"]] == [ID_1]


def test_list_unread_only_in_a_well_known_folder(graph: responses.RequestsMock, mail: GraphMailToolset, context: ToolContext) -> None:
    graph.add(responses.GET, FOLDER_MESSAGES, json=message_list(summary_item(), summary_item(ID_2), next_link=f"{BASE}/me/mailFolders/sentitems/messages?$skip=2"))
    result = run(mail, context, "mail_list", folder="SentItems", top=50, unread_only=True)
    call = graph.calls[0]
    assert path_of(call) == "/v1.0/me/mailFolders/sentitems/messages"
    assert query_of(call) == {
        "$top": ["50"],
        "$orderby": ["receivedDateTime desc"],
        # Graph requires the $orderby property to lead the $filter (else InefficientFilter).
        "$filter": ["receivedDateTime ge 1900-01-01T00:00:00Z and isRead eq false"],
        "$select": [LIST_SELECT],
    }
    assert UNREAD_FILTER == query_of(call)["$filter"][0]
    assert result.text.startswith("2 unread messages in sentitems, newest first:")
    assert "More messages available; raise top (up to 50) to see them." in result.text
    assert len(graph.calls) == 1


def test_list_by_folder_id_is_url_encoded(graph: responses.RequestsMock, mail: GraphMailToolset, context: ToolContext) -> None:
    graph.add(responses.GET, FOLDER_MESSAGES, json=message_list())
    result = run(mail, context, "mail_list", folder=FOLDER_ID, unread_only=False)
    assert not result.is_error
    raw_path = path_of(graph.calls[0])
    assert raw_path == f"/v1.0/me/mailFolders/{FOLDER_ID.replace('=', '%3D')}/messages"
    assert unquote(raw_path) == f"/v1.0/me/mailFolders/{FOLDER_ID}/messages"
    assert "$filter" not in query_of(graph.calls[0])
    assert result.text == f"No messages in {FOLDER_ID}."


INJECTIONS = [
    "../messages",
    "..",
    "inbox/../../users/ceo@contoso.com",
    "inbox/childFolders",
    "inbox?$select=body",
    "inbox#x",
    "inbox%2F..%2F..",
    "in box",
    "in\nbox",
    "inbox\r\nHost: evil",
    "inbox\\..",
    "users('ceo')",
    "x" * 513,
]


@pytest.mark.parametrize("folder", INJECTIONS)
def test_list_rejects_folder_values_that_could_change_the_path(
    graph: responses.RequestsMock, mail: GraphMailToolset, context: ToolContext, upstream: FakeUpstream, folder: str
) -> None:
    result = run(mail, context, "mail_list", folder=folder)
    assert result.is_error
    assert result.text.startswith("Invalid arguments for mail_list: argument 'folder'")
    assert len(graph.calls) == 0
    assert upstream.rejected == []


# -- mail_get --------------------------------------------------------------------------------------


def test_get_renders_the_html_body_as_text(graph: responses.RequestsMock, mail: GraphMailToolset, context: ToolContext) -> None:
    graph.add(responses.GET, ONE_MESSAGE, json=full_message())
    result = run(mail, context, "mail_get", message_id=ID_1)
    assert not result.is_error, result.text
    call = graph.calls[0]
    assert path_of(call) == f"/v1.0/me/messages/{ID_1.replace('=', '%3D')}"
    select = query_of(call)["$select"][0].split(",")
    assert {"id", "subject", "from", "toRecipients", "receivedDateTime", "body", "isRead", "webLink"} <= set(select)
    assert call.request.headers["Authorization"] == f"Bearer {TOKEN}"

    body = (
        "Hi team,\n"
        "\n"
        "The Q3 numbers are <attached> & final.\n"
        "Revenue: €1.2M\n"
        "\n"
        "Agenda:\n"
        "\n"
        "- Revenue\n"
        "- Costs — café\n"
        "\n"
        "Join: Join the meeting now <https://teams.microsoft.com/l/meetup-join/19%3ameeting>\n"
        "\n"
        "Thanks,\n"
        "Adele\n"
        "[Contoso logo]"
    )
    assert result.text == (
        "Subject: Q3 numbers\n"
        "From: Adele Vance <AdeleV@contoso.onmicrosoft.com>\n"
        "To: Megan Bowen <MeganB@contoso.onmicrosoft.com>, alex@contoso.com\n"
        "Received: 2024-05-02 08:15 UTC\n"
        "Status: unread, has attachments, high importance\n"
        f"id: {ID_1}\n"
        f"Open in Outlook: {WEB_LINK}\n"
        "\n" + body
    )
    for hidden in ("secretScript", "secret-css", "ignored title", "<div", "&nbsp;", "&amp;", "\xa0"):
        assert hidden not in result.text
    assert result.structured is not None
    assert result.structured["body"] == body
    assert result.structured["body_truncated"] is False
    assert result.structured["id"] == ID_1
    assert result.structured["from"] == {"name": "Adele Vance", "address": "AdeleV@contoso.onmicrosoft.com"}
    assert result.structured["to"][0] == {"name": "Megan Bowen", "address": "MeganB@contoso.onmicrosoft.com"}
    assert result.structured["cc"] == []
    assert result.structured["importance"] == "high"
    assert result.structured["web_link"] == WEB_LINK


def test_get_plain_text_body(graph: responses.RequestsMock, mail: GraphMailToolset, context: ToolContext) -> None:
    graph.add(responses.GET, ONE_MESSAGE, json=full_message({"contentType": "text", "content": "Line one\r\n\r\n\r\n\r\nLine <two>  \r\n"}, is_read=True))
    result = run(mail, context, "mail_get", message_id=ID_1)
    assert result.text.endswith("\n\nLine one\n\nLine <two>")
    assert "Status: read, has attachments, high importance" in result.text


def test_get_caps_very_long_bodies(graph: responses.RequestsMock, mail: GraphMailToolset, context: ToolContext) -> None:
    paragraph = "<p>" + "word " * 1000 + "</p>"
    graph.add(responses.GET, ONE_MESSAGE, json=full_message({"contentType": "html", "content": paragraph * 10}))
    result = run(mail, context, "mail_get", message_id=ID_1)
    assert result.structured is not None
    assert result.structured["body_truncated"] is True
    assert len(result.structured["body"]) <= MAX_BODY_CHARS
    assert re.search(r"\[Body truncated: showing the first 20,000 of 5\d,\d{3} characters\. Open the message in Outlook for the rest\.\]$", result.text)


@pytest.mark.parametrize("message_id", INJECTIONS + ["", "  "])
def test_get_rejects_ids_that_could_change_the_path(
    graph: responses.RequestsMock, mail: GraphMailToolset, context: ToolContext, upstream: FakeUpstream, message_id: str
) -> None:
    result = run(mail, context, "mail_get", message_id=message_id)
    assert result.is_error
    assert result.text.startswith("Invalid arguments for mail_get: argument 'message_id'")
    assert len(graph.calls) == 0
    assert upstream.rejected == []


# -- HTML to text ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "markup, text",
    [
        ("<p>a</p><p>b</p>", "a\n\nb"),
        ("<div>a</div><div>b</div>", "a\nb"),
        ("a<br>b<br/>c", "a\nb\nc"),
        ("<p>one\n   two</p>", "one two"),
        ("&lt;b&gt; &amp;amp; &#169; &#x2764; &quot;q&quot;", '<b> &amp; © ❤ "q"'),
        ("<style>p{}</style><script>alert(1)</script>visible", "visible"),
        ("<head><title>t</title><div>left open</div>", "left open"),
        ("before<script>never closed", "before"),
        ("<!--[if mso]><p>outlook only</p><![endif]-->shown", "shown"),
        ("<table><tr><td>A</td><td>B</td></tr><tr><td>C</td><td>D</td></tr></table>", "A B\nC D"),
        ("<ol><li>x</li><li>y</li></ol>", "- x\n- y"),
        ("<a href='https://example.com'>https://example.com</a>", "https://example.com"),
        ("<a href='javascript:alert(1)'>click</a>", "click"),
        ("a<br><br><br><br><br>b", "a\n\nb"),
        ("zero\u200bwidth\u00a0space", "zerowidth space"),
    ],
)
def test_html_to_text(markup: str, text: str) -> None:
    assert html_to_text(markup) == text


# -- Graph errors ----------------------------------------------------------------------------------


def test_not_found_message(graph: responses.RequestsMock, mail: GraphMailToolset, context: ToolContext) -> None:
    graph.add(responses.GET, ONE_MESSAGE, status=404, json=graph_error("ErrorItemNotFound", "The specified object was not found in the store."))
    result = run(mail, context, "mail_get", message_id=ID_1)
    assert result.is_error
    assert result.structured is None
    assert result.text == (
        "Message not found: it may have been deleted or moved, or the id is wrong "
        "(ErrorItemNotFound: The specified object was not found in the store.)."
    )


def test_not_found_folder(graph: responses.RequestsMock, mail: GraphMailToolset, context: ToolContext) -> None:
    graph.add(responses.GET, FOLDER_MESSAGES, status=404, json=graph_error("ErrorInvalidIdMalformed", "Id is malformed."))
    result = run(mail, context, "mail_list", folder="Projects")
    assert result.is_error
    assert result.text.startswith("Mail folder not found: 'Projects'")
    assert "(ErrorInvalidIdMalformed: Id is malformed.)" in result.text


def test_forbidden_names_the_permission(graph: responses.RequestsMock, mail: GraphMailToolset, context: ToolContext) -> None:
    graph.add(responses.GET, MESSAGES, status=403, json=graph_error("ErrorAccessDenied", "Access is denied. Check credentials and try again."))
    result = run(mail, context, "mail_search", query="x")
    assert result.is_error
    assert "Microsoft Graph denied access (ErrorAccessDenied: Access is denied. Check credentials and try again.)" in result.text
    assert "Mail.Read" in result.text
    assert len(graph.calls) == 1


def test_throttling_reports_retry_after_and_does_not_retry(
    graph: responses.RequestsMock, mail: GraphMailToolset, context: ToolContext, upstream: FakeUpstream
) -> None:
    graph.add(
        responses.GET,
        MESSAGES,
        status=429,
        headers={"Retry-After": "30"},
        json=graph_error("ApplicationThrottled", "Application is over its MailboxConcurrency limit."),
    )
    result = run(mail, context, "mail_search", query="x")
    assert result.is_error
    assert result.text.startswith("Graph is throttling requests; retry after 30 seconds")
    assert "ApplicationThrottled" in result.text
    assert len(graph.calls) == 1
    assert upstream.rejected == [None]


def test_throttling_with_an_http_date_retry_after(graph: responses.RequestsMock, mail: GraphMailToolset, context: ToolContext) -> None:
    later = datetime.now(timezone.utc) + timedelta(seconds=120)
    graph.add(responses.GET, FOLDER_MESSAGES, status=429, headers={"Retry-After": format_datetime(later, usegmt=True)}, json=graph_error("TooManyRequests", "Too many requests."))
    result = run(mail, context, "mail_list")
    assert re.match(r"Graph is throttling requests; retry after 1[12]\d seconds", result.text), result.text


def test_throttling_without_retry_after(graph: responses.RequestsMock, mail: GraphMailToolset, context: ToolContext) -> None:
    graph.add(responses.GET, FOLDER_MESSAGES, status=429, body="")
    result = run(mail, context, "mail_list")
    assert result.is_error
    assert result.text == "Graph is throttling requests; retry in a little while."


@pytest.mark.parametrize(
    "status, headers, body, suffix",
    [
        (503, {"Retry-After": "10"}, graph_error("ServiceNotAvailable", "Service unavailable."), " in 10 seconds (HTTP 503, ServiceNotAvailable)."),
        (500, {}, graph_error("UnknownError", ""), " (HTTP 500, UnknownError)."),
        (502, {}, "<html>Bad Gateway</html>", " (HTTP 502)."),
        (504, {}, graph_error("UnknownError", "timeout"), " (HTTP 504, UnknownError)."),
    ],
)
def test_server_errors_say_graph_is_unavailable(
    graph: responses.RequestsMock,
    mail: GraphMailToolset,
    context: ToolContext,
    caplog: pytest.LogCaptureFixture,
    status: int,
    headers: dict[str, str],
    body: Any,
    suffix: str,
) -> None:
    kwargs: dict[str, Any] = {"json": body} if isinstance(body, dict) else {"body": body}
    graph.add(responses.GET, MESSAGES, status=status, headers=headers, **kwargs)
    with caplog.at_level(logging.DEBUG):
        result = run(mail, context, "mail_search", query="secret project")
    assert result.is_error
    assert result.text == "Microsoft Graph is unavailable, try again" + suffix
    assert len(graph.calls) == 1
    assert f"HTTP {status}" in caplog.text
    for token in TOKENS:
        assert token not in caplog.text
    assert "secret project" not in caplog.text


@pytest.mark.parametrize(
    "failure, detail",
    [
        (requests.exceptions.ReadTimeout("read timed out"), "(no answer within 15 seconds)."),
        (requests.exceptions.ConnectTimeout("connect timed out"), "(no answer within 15 seconds)."),
        (requests.exceptions.ConnectionError("connection refused"), "(it could not be reached)."),
    ],
)
def test_timeouts_and_connection_errors(
    graph: responses.RequestsMock, mail: GraphMailToolset, context: ToolContext, failure: Exception, detail: str
) -> None:
    graph.add(responses.GET, ONE_MESSAGE, body=failure)
    result = run(mail, context, "mail_get", message_id=ID_1)
    assert result.is_error
    assert result.text == f"Microsoft Graph is unavailable, try again {detail}"


def test_bad_request_shows_graphs_explanation(graph: responses.RequestsMock, mail: GraphMailToolset, context: ToolContext) -> None:
    graph.add(responses.GET, MESSAGES, status=400, json=graph_error("BadRequest", "Syntax error: character ':' is not valid at position 5 in 'from::x'."))
    result = run(mail, context, "mail_search", query="from::x")
    assert result.text == (
        "Microsoft Graph rejected the request (BadRequest: Syntax error: character ':' is not valid at position 5 in 'from::x'.)."
    )
    assert result.is_error


def test_unexpected_bodies_are_tool_errors(graph: responses.RequestsMock, mail: GraphMailToolset, context: ToolContext) -> None:
    graph.add(responses.GET, MESSAGES, status=200, body="<html>captive portal</html>", content_type="text/html")
    graph.add(responses.GET, FOLDER_MESSAGES, status=200, json={"@odata.context": "x"})
    assert run(mail, context, "mail_search", query="x").text == "Microsoft Graph returned an unexpected response; try again."
    listed = run(mail, context, "mail_list")
    assert listed.is_error and "no message list" in listed.text


def test_redirects_are_not_followed(graph: responses.RequestsMock, mail: GraphMailToolset, context: ToolContext) -> None:
    graph.add(responses.GET, MESSAGES, status=302, headers={"Location": "https://evil.example/steal"})
    graph.add(responses.GET, "https://evil.example/steal", json=message_list())
    result = run(mail, context, "mail_search", query="x")
    assert result.is_error
    assert result.text == "Microsoft Graph answered with an unexpected redirect (HTTP 302)."
    assert [urlsplit(url_of(call)).hostname for call in graph.calls] == ["graph.microsoft.com"]


def test_graph_error_text_echoing_the_token_is_redacted(graph: responses.RequestsMock, mail: GraphMailToolset, context: ToolContext) -> None:
    graph.add(responses.GET, MESSAGES, status=400, json=graph_error("BadRequest", f"Bad header Bearer {TOKEN}"))
    result = run(mail, context, "mail_search", query="x")
    assert result.text == "Microsoft Graph rejected the request (BadRequest: Bad header Bearer [token])."


# -- 401: one renewal, one retry -------------------------------------------------------------------


def test_401_renews_the_token_once_and_retries(
    graph: responses.RequestsMock, mail: GraphMailToolset, context: ToolContext, upstream: FakeUpstream
) -> None:
    graph.add(responses.GET, MESSAGES, status=401, json=graph_error("InvalidAuthenticationToken", "Lifetime validation failed, the token is expired."))
    graph.add(responses.GET, MESSAGES, json=message_list(summary_item()))
    result = run(mail, context, "mail_search", query="report", top=3)
    assert not result.is_error, result.text
    assert upstream.rejected == [None, TOKEN]
    assert [call.request.headers["Authorization"] for call in graph.calls] == [f"Bearer {TOKEN}", f"Bearer {RENEWED}"]
    # The retry is the same request.
    assert url_of(graph.calls[0]) == url_of(graph.calls[1])
    assert graph.calls[1].request.headers["ConsistencyLevel"] == "eventual"
    assert "Q3 numbers" in result.text


def test_a_second_401_is_a_tool_error(
    graph: responses.RequestsMock, mail: GraphMailToolset, context: ToolContext, upstream: FakeUpstream
) -> None:
    error = graph_error("InvalidAuthenticationToken", "Access token validation failure. Invalid audience.")
    graph.add(responses.GET, ONE_MESSAGE, status=401, json=error)
    graph.add(responses.GET, ONE_MESSAGE, status=401, json=error)
    graph.add(responses.GET, ONE_MESSAGE, json=full_message())
    result = run(mail, context, "mail_get", message_id=ID_1)
    assert result.is_error
    assert len(graph.calls) == 2
    assert upstream.rejected == [None, TOKEN]
    assert result.text.startswith(
        "Microsoft Graph rejected the access token even after it was renewed "
        "(InvalidAuthenticationToken: Access token validation failure. Invalid audience.)"
    )


def test_the_token_service_ending_the_session_propagates(graph: responses.RequestsMock, mail: GraphMailToolset) -> None:
    upstream = FakeUpstream(fail_on_renewal=InvalidToken("the upstream session ended; sign in again"))
    context = ToolContext(access=access_context("Mail.Read"), upstream=upstream)
    graph.add(responses.GET, MESSAGES, status=401, json=graph_error("InvalidAuthenticationToken", "expired"))
    with pytest.raises(InvalidToken):
        mail.call("mail_search", {"query": "x"}, context)
    assert len(graph.calls) == 1
    assert upstream.rejected == [None, TOKEN]


def test_an_unavailable_identity_provider_propagates(graph: responses.RequestsMock, mail: GraphMailToolset) -> None:
    upstream = FakeUpstream(fail_with=TemporarilyUnavailable("the identity provider is unavailable"))
    context = ToolContext(access=access_context("Mail.Read"), upstream=upstream)
    with pytest.raises(TemporarilyUnavailable):
        mail.call("mail_list", {}, context)
    assert len(graph.calls) == 0


def test_the_token_goes_only_to_the_configured_host(graph: responses.RequestsMock, context: ToolContext) -> None:
    mail = GraphMailToolset(base_url="http://127.0.0.1:8765/graph/v1.0/")
    graph.add(responses.GET, re.compile(r"http://127\.0\.0\.1:8765/graph/v1\.0/me/mailFolders/inbox/messages.*"), json=message_list())
    result = run(mail, context, "mail_list")
    assert not result.is_error, result.text
    assert url_of(graph.calls[0]).startswith("http://127.0.0.1:8765/graph/v1.0/me/mailFolders/inbox/messages?")


# -- through the domain's ToolService --------------------------------------------------------------


@pytest.fixture
def tokens() -> StubTokenService:
    return StubTokenService()


@pytest.fixture
def service(mail: GraphMailToolset, tokens: StubTokenService) -> ToolService:
    return ToolService(toolsets=[mail], upstream=cast(UpstreamTokenService, tokens))


@pytest.mark.parametrize(
    "name, arguments, problem",
    [
        ("mail_search", {"query": "x", "top": 0}, "argument 'top' must be at least 1"),
        ("mail_search", {"query": "x", "top": 26}, "argument 'top' must be at most 25"),
        ("mail_search", {"query": "x", "top": "5"}, "argument 'top' must be of type integer"),
        ("mail_search", {"query": "x", "top": True}, "argument 'top' must be of type integer"),
        ("mail_search", {"top": 5}, "missing required argument 'query'"),
        ("mail_search", {"query": 42}, "argument 'query' must be of type string"),
        ("mail_search", {"query": "x", "folder": "inbox"}, "unknown argument 'folder'"),
        ("mail_list", {"top": 51}, "argument 'top' must be at most 50"),
        ("mail_list", {"unread_only": "yes"}, "argument 'unread_only' must be of type boolean"),
        ("mail_list", {"folder": 3}, "argument 'folder' must be of type string"),
        ("mail_get", {}, "missing required argument 'message_id'"),
    ],
)
def test_service_rejects_bad_arguments_as_tool_errors(
    graph: responses.RequestsMock, service: ToolService, tokens: StubTokenService, name: str, arguments: dict[str, Any], problem: str
) -> None:
    result = service.call(access_context("Mail.Read"), name, arguments)
    assert result == ToolResult.error(f"Invalid arguments for {name}: {problem}")
    assert len(graph.calls) == 0
    assert tokens.calls == []


def test_direct_calls_check_arguments_too(graph: responses.RequestsMock, mail: GraphMailToolset, context: ToolContext) -> None:
    assert run(mail, context, "mail_list", top=0) == ToolResult.error("Invalid arguments for mail_list: argument 'top' must be at least 1")
    assert run(mail, context, "mail_send", to="x") == ToolResult.error("Unknown tool: mail_send")
    assert len(graph.calls) == 0


def test_service_runs_the_tools_with_the_grants_token(
    graph: responses.RequestsMock, service: ToolService, tokens: StubTokenService
) -> None:
    assert service.scopes() == ("Mail.Read",)
    graph.add(responses.GET, MESSAGES, status=401, json=graph_error("InvalidAuthenticationToken", "expired"))
    graph.add(responses.GET, MESSAGES, json=message_list(summary_item()))
    result = service.call(access_context("Mail.Read", "User.Read"), "mail_search", {"query": "numbers", "top": 5})
    assert not result.is_error, result.text
    assert_no_token(result)
    assert tokens.calls == [("grant-1", None), ("grant-1", TOKEN)]
    assert query_of(graph.calls[1])["$top"] == ["5"]


def test_service_requires_mail_read(graph: responses.RequestsMock, service: ToolService) -> None:
    with pytest.raises(InsufficientScope) as raised:
        service.call(access_context("User.Read"), "mail_list", {})
    assert raised.value.required_scopes == ("Mail.Read",)
    assert len(graph.calls) == 0


def test_each_graph_request_is_reported_as_an_upstream_call(graph: responses.RequestsMock, context: ToolContext) -> None:
    """Issue 11 §4: upstream calls by provider and outcome with latency include the tools' Graph
    requests: one per request (the retry after a rejected token too), named by the tool."""
    telemetry, ticks = RecordingTelemetry(), iter(range(0, 100, 2))
    mail = GraphMailToolset(telemetry=telemetry, monotonic=lambda: float(next(ticks)))
    graph.add(responses.GET, MESSAGES, json=message_list(summary_item()))
    graph.add(responses.GET, FOLDER_MESSAGES, status=401, json=graph_error("InvalidAuthenticationToken", "expired"))
    graph.add(responses.GET, FOLDER_MESSAGES, json=message_list())
    graph.add(responses.GET, re.compile(re.escape(BASE + "/me/messages/") + ".+"), status=503)
    run(mail, context, "mail_search", query="x")
    run(mail, context, "mail_list")
    run(mail, context, "mail_get", message_id="AAMk")
    assert telemetry.calls == [
        ("graph", "mail_search", "ok", 2.0),
        ("graph", "mail_list", "refused", 2.0),
        ("graph", "mail_list", "ok", 2.0),
        ("graph", "mail_get", "unavailable", 2.0),
    ]


def test_a_graph_request_that_times_out_is_reported_unavailable(context: ToolContext) -> None:
    telemetry = RecordingTelemetry()
    with responses.RequestsMock() as graph:
        graph.add(responses.GET, MESSAGES, body=requests.Timeout("slow"))
        result = GraphMailToolset(telemetry=telemetry).call("mail_search", {"query": "x"}, context)
    assert result.is_error
    assert [call[:3] for call in telemetry.calls] == [("graph", "mail_search", "unavailable")]
