"""Run the official MCP conformance suite's authorization-server scenarios against this server,
by hand (not part of ./run-tests: it needs Node 22 and the npm package).

``@modelcontextprotocol/conformance`` has an ``authorization`` command from 0.2.0 on (0.1.x has
only client and MCP-server scenarios). Its scenarios: ``authorization-server-metadata-endpoint``
(RFC 8414 metadata, and a WARNING unless ``client_id_metadata_document_supported`` is true) and
``authorization-code-grant`` (authorization code + PKCE for a given client id with the redirect
URI ``http://127.0.0.1:<port>/callback``; the tool prints the authorization URL for a person to
open and waits on that callback). This script starts ``mcp-oauth-bridge serve`` on loopback,
makes the client, runs the tool, plays the person (consent and fake sign-in with the headless
browser of ``tests/integration/mcp_sdk_driver.py``), delivers the final redirect to the tool's
callback server, and prints the tool's output and exit status.

    npm install --prefix /tmp/conf-alpha @modelcontextprotocol/conformance@0.2.0-alpha.12
    PATH=/tmp/conf/node_modules/.bin:$PATH .venv-test/bin/python -m tests.conformance.run_authorization_server \\
        --conformance /tmp/conf-alpha/node_modules/.bin/conformance --client dcr

``--client``: ``dcr`` (a public client registered at /oauth/register), ``operator`` (a public
client made with ``mcp-oauth-bridge clients add --public``) or ``metadata-document`` (a client ID
metadata document served on loopback, with CIMD_ALLOW_LOOPBACK=true).
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from cryptography.fernet import Fernet

from tests.integration.document_server import DocumentHost
from tests.integration.mcp_sdk_driver import sign_in_with_fake_idp
from tests.integration.servers import free_port, running_server, server_environment

SERVE = [sys.executable, "-m", "mcp_oauth_bridge.entrypoints.cli", "serve", "--bind", "127.0.0.1:{port}", "--workers", "2"]
CLIENT_NAME = "MCP conformance suite"
# The tool waits up to 5 minutes for its callback; give up sooner.
RUN_TIMEOUT = 120


def register_public_client(base_url: str, redirect_uri: str) -> str:
    reply = requests.post(base_url + "/oauth/register", json={
        "client_name": CLIENT_NAME,
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    }, timeout=10)
    reply.raise_for_status()
    client_id: str = reply.json()["client_id"]
    return client_id


def operator_client(environment: dict[str, str], redirect_uri: str) -> str:
    created = subprocess.run(
        [sys.executable, "-m", "mcp_oauth_bridge.entrypoints.cli", "clients", "add", "--name", CLIENT_NAME,
         "--redirect-uri", redirect_uri, "--public", "--json"],
        env=environment, capture_output=True, text=True, timeout=60, check=True,
    )
    client_id: str = json.loads(created.stdout)["client_id"]
    return client_id


def play_the_person(tool: subprocess.Popen[str], base_url: str, transcript: list[str]) -> None:
    """Echo the tool's output; open every authorization URL it prints, approve, sign in, and
    deliver the final redirect to its callback server."""
    assert tool.stdout is not None
    for line in tool.stdout:
        transcript.append(line)
        sys.stdout.write(line)
        sys.stdout.flush()
        if line.startswith(base_url) and "/authorize?" in line:
            redirects: list[str] = []
            sign_in_with_fake_idp(requests.Session(), line.strip(), "conformance", final_redirects=redirects, timeout=15)
            deliver(redirects[0])


def deliver(callback_url: str) -> None:
    """GET the tool's callback (it starts listening as it prints the URL: retry briefly)."""
    for _ in range(50):
        try:
            requests.get(callback_url, timeout=15)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError(f"the conformance tool's callback server never answered at {callback_url.split('?')[0]}")


def check_counts(results: Path) -> str:
    """Every check the tool saved (checks.json per scenario), and the counts by status: the
    tool's summary counts passes and failures only, not warnings."""
    lines = []
    counts: dict[str, int] = {}
    for checks_file in sorted(results.glob("*/checks.json")):
        for check in json.loads(checks_file.read_text()):
            counts[check["status"]] = counts.get(check["status"], 0) + 1
            message = f" - {check['errorMessage']}" if check.get("errorMessage") else ""
            lines.append(f"{check['status']:8} {check['id']}: {check['description']}{message}")
    lines.append(", ".join(f"{status}: {count}" for status, count in sorted(counts.items())))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conformance", required=True, help="the conformance CLI (node_modules/.bin/conformance)")
    parser.add_argument("--client", choices=("dcr", "operator", "metadata-document"), default="dcr")
    parser.add_argument("--output-dir", help="where the tool saves checks.json (default: a temporary directory)")
    args = parser.parse_args()

    callback_port = free_port()
    redirect_uri = f"http://127.0.0.1:{callback_port}/callback"
    with tempfile.TemporaryDirectory(prefix="conformance-") as scratch:
        work = Path(scratch)
        documents = DocumentHost() if args.client == "metadata-document" else None
        # Fixed here so that the CLI (operator clients) shares the server's keys.
        env = {"ENCRYPTION_KEYS": Fernet.generate_key().decode(), "TOKEN_HASH_KEY": secrets.token_urlsafe(32)}
        if documents is not None:
            env["CIMD_ALLOW_LOOPBACK"] = "true"
        try:
            with running_server(work, command=SERVE, **env) as server:
                if args.client == "dcr":
                    client_id = register_public_client(server.base_url, redirect_uri)
                elif args.client == "operator":
                    port = int(server.base_url.rsplit(":", 1)[1])
                    client_id = operator_client(server_environment(work / "data", port, **env), redirect_uri)
                else:
                    assert documents is not None
                    client_id = documents.client_document("/conformance-client.json", [redirect_uri])
                print(f"server {server.base_url}, client ({args.client}) {client_id}, redirect URI {redirect_uri}", flush=True)
                results = Path(args.output_dir) if args.output_dir else work / "results"
                command = [
                    args.conformance, "authorization", "--url", server.base_url, "--client-id", client_id,
                    "--port", str(callback_port), "--output-dir", str(results),
                ]
                tool = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                transcript: list[str] = []
                person = threading.Thread(target=play_the_person, args=(tool, server.base_url, transcript), daemon=True)
                person.start()
                try:
                    status = tool.wait(timeout=RUN_TIMEOUT)
                except subprocess.TimeoutExpired:
                    tool.kill()
                    status = tool.wait()
                person.join(10)
                print(f"\nconformance exit status: {status}")
                print("\n--- checks ---\n" + check_counts(results))
                print("\n--- server log ---\n" + server.log_text())
                return status
        finally:
            if documents is not None:
                documents.server.stop()


if __name__ == "__main__":
    sys.exit(main())
