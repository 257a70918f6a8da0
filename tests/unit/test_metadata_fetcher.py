"""SafeMetadataFetcher without a network (draft-ietf-oauth-client-id-metadata-document §8.6 SSRF):
the address classes it refuses, the URLs it refuses, the cache headers it reads. Every fetch here
gets a stub resolver and a socket opener that records and refuses, so no test can open a
connection even if the guard were broken; the HTTP side is tests/integration/test_metadata_fetcher_http.py.
"""

from __future__ import annotations

import email.message
import logging
import socket
import threading
from typing import Any, Sequence

import pytest

from mcp_oauth_bridge.adapters.metadata_fetcher import (
    SafeMetadataFetcher,
    address_refusal,
    max_age_from_headers,
)
from mcp_oauth_bridge.domain.ports import ClientMetadataFetcher, MetadataDocumentUnavailable

# Every special-use class the fetcher must refuse, as a resolved address would come back.
REFUSED_ADDRESSES = [
    "0.0.0.0", "0.1.2.3",                                  # unspecified, "this network"
    "10.0.0.1", "172.16.5.4", "172.31.255.255", "192.168.1.1",  # private
    "100.64.0.1", "100.127.255.254",                       # shared address space (CGNAT)
    "169.254.169.254", "169.254.0.1",                      # link-local (cloud metadata)
    "192.0.0.8", "192.0.0.170",                            # IETF protocol assignments
    "192.0.2.1", "198.51.100.7", "203.0.113.200",          # documentation
    "192.88.99.1",                                         # 6to4 relay anycast
    "198.18.0.1", "198.19.255.255",                        # benchmarking
    "224.0.0.1", "239.255.255.250",                        # multicast
    "240.0.0.1", "255.255.255.255",                        # reserved, broadcast
    "::", "::ffff:8.8.8.8", "::ffff:10.0.0.1", "::ffff:127.0.0.1",  # unspecified, IPv4-mapped
    "::8.8.8.8", "::10.0.0.1",                             # IPv4-compatible
    "64:ff9b::a00:1", "64:ff9b::808:808", "64:ff9b:1::1",  # NAT64
    "100::1",                                              # discard
    "2001::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2",     # Teredo
    "2001:2::1", "2001:10::1",                             # benchmarking, ORCHID
    "2001:db8::1", "3fff::1", "3fff:fff::1",               # documentation
    "2002:a00:1::1", "2002:808:808::1",                    # 6to4
    "5f00::1",                                             # SRv6 SIDs
    "fc00::1", "fd12:3456::1",                             # unique local
    "fe80::1", "fe80::1%1",                                # link-local (with a zone)
    "fec0::1",                                             # site-local
    "ff02::1", "ff0e::1",                                  # multicast
    "4000::1", "::2",                                      # outside global unicast 2000::/3
]
LOOPBACK_ADDRESSES = ["127.0.0.1", "127.0.0.2", "127.255.255.254", "::1"]
# Only ever handed to the pure check or to a stub resolver whose answer is never connected to.
PUBLIC_ADDRESSES = ["8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700:4700::1111", "2a00:1450:4001::1"]


class RefusingOpener:
    """The socket opener of every test here: records the attempt and never connects."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, int]] = []

    def __call__(self, address: str, port: int, timeout: float) -> socket.socket:
        self.attempts.append((address, port))
        raise ConnectionRefusedError("tests in this module never connect")


class StubResolver:
    def __init__(self, answers: Sequence[str] = (), error: OSError | None = None) -> None:
        self.answers = list(answers)
        self.error = error
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append((host, port))
        if self.error is not None:
            raise self.error
        return self.answers


def fetcher(resolver: StubResolver, opener: RefusingOpener, **options: Any) -> SafeMetadataFetcher:
    return SafeMetadataFetcher(resolve=resolver, open_socket=opener, **options)


def refusal_of(fetch: SafeMetadataFetcher, url: str) -> str:
    with pytest.raises(MetadataDocumentUnavailable) as raised:
        fetch.fetch(url)
    return str(raised.value)


def test_it_is_the_port() -> None:
    assert isinstance(SafeMetadataFetcher(), ClientMetadataFetcher)


# -- address classes ----------------------------------------------------------------------------


@pytest.mark.parametrize("address", REFUSED_ADDRESSES)
def test_special_use_addresses_are_refused_even_with_loopback_allowed(address: str) -> None:
    assert address_refusal(address) is not None
    assert address_refusal(address, allow_loopback=True) is not None


@pytest.mark.parametrize("address", LOOPBACK_ADDRESSES)
def test_loopback_is_refused_unless_allowed(address: str) -> None:
    assert address_refusal(address) == "loopback"
    assert address_refusal(address, allow_loopback=True) is None


@pytest.mark.parametrize("address", PUBLIC_ADDRESSES)
def test_globally_routable_addresses_pass(address: str) -> None:
    assert address_refusal(address) is None


@pytest.mark.parametrize(
    ("address", "named"),
    [("::ffff:8.8.8.8", "IPv4-mapped"), ("64:ff9b::808:808", "NAT64"), ("2002:808:808::1", "6to4"),
     ("2001:0:4136:e378::1", "Teredo"), ("100.64.0.1", "shared (CGNAT)"), ("169.254.169.254", "link-local"),
     ("203.0.113.1", "documentation"), ("224.0.0.251", "multicast"), ("::", "unspecified")],
)
def test_the_refusal_names_the_class(address: str, named: str) -> None:
    assert address_refusal(address) == named


@pytest.mark.parametrize("address", REFUSED_ADDRESSES + LOOPBACK_ADDRESSES)
def test_a_name_resolving_to_a_refused_address_is_never_connected_to(
    address: str, caplog: pytest.LogCaptureFixture
) -> None:
    resolver, opener = StubResolver([address]), RefusingOpener()
    caplog.set_level(logging.INFO, logger="mcp_oauth_bridge.adapters.metadata_fetcher")
    message = refusal_of(fetcher(resolver, opener), "https://client.example/metadata?key=secret")
    assert resolver.calls == [("client.example", 443)]
    assert opener.attempts == []
    assert message == "the host client.example resolves to an address that is not publicly routable"
    # The operator's log names the host and the address; never the query string.
    assert "client.example" in caplog.text and address in caplog.text
    assert "secret" not in caplog.text


@pytest.mark.parametrize("mix", [["93.184.215.14", "10.0.0.7"], ["2606:4700::1", "fd00::1"],
                                 ["93.184.215.14", "::ffff:93.184.215.14"], ["8.8.8.8", "127.0.0.1"]])
def test_one_refused_address_among_public_ones_refuses_the_name(mix: list[str]) -> None:
    resolver, opener = StubResolver(mix), RefusingOpener()
    assert "not publicly routable" in refusal_of(fetcher(resolver, opener), "https://client.example/m")
    assert opener.attempts == []


@pytest.mark.parametrize(
    "url",
    ["https://10.0.0.1/m", "https://169.254.169.254/latest/meta-data", "https://[::ffff:10.0.0.1]/m",
     "https://[fe80::1%25eth0]/m", "https://[64:ff9b::a00:1]/m", "https://127.0.0.1/m", "https://[::1]/m",
     "https://100.64.0.1:8443/m"],
)
def test_literal_ip_hosts_go_through_the_same_check(url: str) -> None:
    resolver, opener = StubResolver(["93.184.215.14"]), RefusingOpener()
    assert "not publicly routable" in refusal_of(fetcher(resolver, opener), url)
    assert resolver.calls == [] and opener.attempts == []


def test_loopback_allowed_admits_loopback_and_nothing_else() -> None:
    opener = RefusingOpener()
    allowed = fetcher(StubResolver(["127.0.0.1"]), opener, allow_loopback=True)
    # Past the check, the (refusing) opener is reached for the loopback address only.
    assert "connection to client.test failed" in refusal_of(allowed, "https://client.test:8443/m")
    assert opener.attempts == [("127.0.0.1", 8443)]
    private = fetcher(StubResolver(["127.0.0.1", "10.0.0.1"]), opener, allow_loopback=True)
    assert "not publicly routable" in refusal_of(private, "https://client.test/m")
    assert opener.attempts == [("127.0.0.1", 8443)]


def test_a_globally_routable_name_reaches_the_opener_at_the_checked_address() -> None:
    resolver, opener = StubResolver(["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]), RefusingOpener()
    refusal_of(fetcher(resolver, opener), "https://client.example/m")
    # Both checked addresses were tried (the stub refuses each); no other.
    assert opener.attempts == [("93.184.215.14", 443), ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", 443)]
    assert resolver.calls == [("client.example", 443)]


# -- URLs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://client.example/m", "not an https URL"),
        ("ftp://client.example/m", "not an https URL"),
        ("client.example/m", "not an https URL"),
        ("https://user@client.example/m", "user information"),
        ("https://user:password@client.example/m", "user information"),
        ("https://client.example/m#fragment", "fragment"),
        ("https://client.example/m#", "fragment"),
        ("https:///m", "no valid host"),
        ("https://:443/m", "no valid host"),
        ("https://client.example:99999/m", "invalid port"),
        ("https://client.example:0/m", "invalid port"),
        ("https://client.example:x/m", "invalid port"),
        ("https://[::1/m", "not a valid URL"),
        ("https://client.example/a b", "not a valid URL"),
        ("https://client.example/\r\nX-Injected: 1", "not a valid URL"),
        ("https://bücher.example/m", "not a valid URL"),
        ("", "not a valid URL"),
        ("https://client%2eexample/m", "no valid host"),
    ],
)
def test_refused_urls_are_refused_before_any_lookup(url: str, message: str) -> None:
    resolver, opener = StubResolver(["93.184.215.14"]), RefusingOpener()
    assert message in refusal_of(fetcher(resolver, opener, allow_loopback=True), url)
    assert resolver.calls == [] and opener.attempts == []


@pytest.mark.parametrize("url", ["http://localhost:8000/m", "http://127.0.0.1/m", "http://[::1]:9/m"])
def test_http_to_loopback_needs_allow_loopback(url: str) -> None:
    resolver, opener = StubResolver(["127.0.0.1"]), RefusingOpener()
    assert "not an https URL" in refusal_of(fetcher(resolver, opener), url)
    assert resolver.calls == [] and opener.attempts == []
    refusal_of(fetcher(resolver, opener, allow_loopback=True), url)
    assert len(opener.attempts) == 1


@pytest.mark.parametrize("url", ["http://client.example/m", "http://10.0.0.1/m", "http://127.0.0.1.nip.io/m"])
def test_http_is_refused_for_other_hosts_even_with_loopback_allowed(url: str) -> None:
    resolver, opener = StubResolver(["127.0.0.1"]), RefusingOpener()
    assert "not an https URL" in refusal_of(fetcher(resolver, opener, allow_loopback=True), url)
    assert opener.attempts == []


def test_http_localhost_must_resolve_to_loopback_only() -> None:
    resolver, opener = StubResolver(["127.0.0.1", "93.184.215.14"]), RefusingOpener()
    message = refusal_of(fetcher(resolver, opener, allow_loopback=True), "http://localhost:8000/m")
    assert "not publicly routable" in message and opener.attempts == []


# -- resolution and connection failures ---------------------------------------------------------


@pytest.mark.parametrize("resolver", [StubResolver(error=socket.gaierror(-2, "Name or service not known")),
                                      StubResolver([])])
def test_a_name_that_does_not_resolve(resolver: StubResolver) -> None:
    opener = RefusingOpener()
    assert refusal_of(fetcher(resolver, opener), "https://nowhere.example/m") == (
        "the host nowhere.example could not be resolved"
    )
    assert opener.attempts == []


def test_a_resolver_that_never_answers_is_abandoned_at_the_deadline() -> None:
    release = threading.Event()

    def hanging(host: str, port: int) -> Sequence[str]:
        release.wait(10)
        return ["10.0.0.1"]

    opener = RefusingOpener()
    try:
        fetch = SafeMetadataFetcher(resolve=hanging, open_socket=opener, total_timeout=0.3)
        assert refusal_of(fetch, "https://slow-dns.example/m") == "the host slow-dns.example did not answer in time"
    finally:
        release.set()
    assert opener.attempts == []


def test_a_connect_timeout_is_reported_as_such() -> None:
    def timing_out(address: str, port: int, timeout: float) -> socket.socket:
        assert 0 < timeout <= 0.5  # the connect deadline, not the total one
        raise TimeoutError()

    fetch = SafeMetadataFetcher(resolve=StubResolver(["93.184.215.14"]), open_socket=timing_out,
                                connect_timeout=0.5, total_timeout=5)
    assert refusal_of(fetch, "https://client.example/m") == "the host client.example did not answer in time"


# -- merged fetches -----------------------------------------------------------------------------


def test_concurrent_failures_are_merged_and_nothing_is_remembered() -> None:
    entered, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def slow_failing(host: str, port: int) -> Sequence[str]:
        calls.append(host)
        entered.set()
        release.wait(10)
        return ["10.0.0.1"]

    fetch = SafeMetadataFetcher(resolve=slow_failing, open_socket=RefusingOpener(), total_timeout=10)
    errors: list[str] = []

    def run() -> None:
        try:
            fetch.fetch("https://client.example/m")
        except MetadataDocumentUnavailable as exc:
            errors.append(str(exc))

    leader = threading.Thread(target=run)
    leader.start()
    assert entered.wait(10)
    followers = [threading.Thread(target=run) for _ in range(5)]
    for thread in followers:
        thread.start()
    # Let the followers reach the wait (generous; a late one would resolve again and show up in calls).
    release.wait(0.5)
    release.set()
    for thread in [leader, *followers]:
        thread.join(10)
    assert calls == ["client.example"]
    assert errors == ["the host client.example resolves to an address that is not publicly routable"] * 6
    # Finished fetches are forgotten: the next one resolves again.
    refusal_of(fetch, "https://client.example/m")
    assert calls == ["client.example"] * 2


# -- cache headers ------------------------------------------------------------------------------

NOW = 1_700_000_000.0
DATE = "Tue, 14 Nov 2023 22:13:20 GMT"  # NOW


def headers(*fields: tuple[str, str]) -> email.message.Message:
    message = email.message.Message()
    for name, value in fields:
        message[name] = value
    return message


@pytest.mark.parametrize(
    ("fields", "max_age"),
    [
        ((), None),
        ((("Cache-Control", "max-age=3600"),), 3600),
        ((("Cache-Control", "public, max-age=600"),), 600),
        ((("Cache-Control", "Max-Age=\"120\""),), 120),
        ((("Cache-Control", "max-age=0"),), 0),
        ((("Cache-Control", "no-store"),), 0),
        ((("Cache-Control", "no-cache"),), 0),
        ((("Cache-Control", "max-age=3600, no-cache"),), 0),
        ((("Cache-Control", "max-age=3600"), ("Cache-Control", "no-store")), 0),
        ((("Cache-Control", "private, max-age=300"),), 300),
        ((("Cache-Control", "s-maxage=900, max-age=300"),), 300),
        ((("Cache-Control", "max-age=300, max-age=60"),), 60),
        ((("Cache-Control", "max-age=soon"),), 0),
        ((("Cache-Control", "max-age=-5"),), 0),
        ((("Cache-Control", "max-age"),), 0),
        ((("Cache-Control", "max-age=" + "9" * 5000),), 2**31),
        ((("Cache-Control", "public"),), None),
        ((("Cache-Control", "max-age=60"), ("Expires", "Wed, 15 Nov 2023 22:13:20 GMT")), 60),
        ((("Date", DATE), ("Expires", "Wed, 15 Nov 2023 22:13:20 GMT")), 86400),
        ((("Date", "Tue, 14 Nov 2023 21:13:20 GMT"), ("Expires", DATE)), 3600),
        ((("Date", DATE), ("Expires", "Mon, 13 Nov 2023 22:13:20 GMT")), 0),
        ((("Date", DATE), ("Expires", "0")), 0),
        ((("Expires", "Tue, 14 Nov 2023 23:13:20 GMT"),), 3600),  # relative to now without Date
        ((("Date", "yesterday"), ("Expires", "Tue, 14 Nov 2023 22:23:20 GMT")), 600),  # bad Date: now
        ((("Cache-Control", "public"), ("Expires", "Tue, 14 Nov 2023 22:14:20 GMT")), 60),
    ],
)
def test_max_age(fields: tuple[tuple[str, str], ...], max_age: int | None) -> None:
    assert max_age_from_headers(headers(*fields), NOW) == max_age
