"""Headers that keep pages from being framed, sniffed or leaking codes through Referer."""

from __future__ import annotations

from flask import Flask, Response

# Consent and error pages must never be framed (clickjacking a consent button).
HTML_SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
}


def add_security_headers(response: Response) -> Response:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if response.mimetype == "text/html" or 300 <= response.status_code < 400:
        for name, value in HTML_SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
    return response


def install(app: Flask) -> None:
    app.after_request(add_security_headers)
