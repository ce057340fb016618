"""SSRF: nothing in a request makes edgeauth fetch a URL of the client's choosing.

Each case puts the URL of a :class:`Listener` (a socket on 127.0.0.1 that
nobody should ever connect to) where a careless gateway or JWT library would
fetch it: ``jku``/``x5u``/``jwk``/``x5c`` headers, a certificate's AIA
pointer, ``kid``, ``iss`` (OIDC discovery), Host and forwarding headers, an
absolute-form target, the login return path. The runners send every case,
then assert the listener saw no connection attempt (RFC 8725 §3.10, CWE-918).
"""

from __future__ import annotations

import base64
import datetime
import select
import socket
from types import TracebackType

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from ..cases import cookie
from .common import (
    API_KEY,
    ATTACKER_KEY,
    FA_NOT_ORIGIN_FORM,
    Attack,
    claims,
    hs,
    partner_claims,
    rs,
)

RFC8725 = "RFC 8725 §3.10 (do not trust received claims: jku/x5u SSRF)"
PORTSWIGGER = "PortSwigger Web Security Academy, 'JWT attacks' (jku, x5u, jwk injection)"


class Listener:
    """A listening socket on 127.0.0.1 that counts the connections made to it.

    The kernel completes a TCP handshake for a listening socket before anyone
    calls accept(), so any connection attempt is visible, however short.
    """

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.setblocking(False)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def connections(self, wait: float = 0.2) -> int:
        """Connections accepted so far (waits at most ``wait`` seconds for one)."""
        count = 0
        while select.select([self._sock], [], [], wait if count == 0 else 0)[0]:
            try:
                conn, _ = self._sock.accept()
            except BlockingIOError:
                break
            conn.close()
            count += 1
        return count

    def __enter__(self) -> Listener:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._sock.close()


def _certificate_pointing_at(url: str) -> str:
    """A self-signed certificate whose AIA caIssuers points at ``url`` (x5c entry)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker")])
    now = datetime.datetime.now(datetime.UTC)
    aia = x509.AuthorityInformationAccess(
        [
            x509.AccessDescription(
                AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(url)
            )
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ATTACKER_KEY.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(aia, critical=False)
        .sign(ATTACKER_KEY, hashes.SHA256())
    )
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def cases(url: str) -> tuple[Attack, ...]:
    """The SSRF cases, each pointing at ``url``."""
    authority = url.removeprefix("http://")
    bearer = "authorization"
    rs_header = {"alg": "RS256", "typ": "JWT"}

    def token_case(id: str, headers: tuple[tuple[str, str], ...], source: str) -> Attack:
        return Attack(
            id, b"/api/partner/x", 401, headers=headers, code="invalid_token", source=source
        )

    def header_case(id: str, name: str, value: str, source: str) -> Attack:
        return Attack(
            id, b"/public/x", 200, headers=((name, value),), forwarded=True, source=source
        )

    return (
        token_case(
            "ssrf-jku",
            (
                (
                    bearer,
                    "Bearer "
                    + rs({**rs_header, "jku": url + "/jwks.json"}, partner_claims(), ATTACKER_KEY),
                ),
            ),
            f"{RFC8725}; {PORTSWIGGER}",
        ),
        token_case(
            "ssrf-jku-real-signature",
            ((bearer, "Bearer " + rs({**rs_header, "jku": url + "/jwks.json"}, partner_claims())),),
            RFC8725,
        ),
        token_case(
            "ssrf-x5u",
            (
                (
                    bearer,
                    "Bearer "
                    + rs({**rs_header, "x5u": url + "/cert.pem"}, partner_claims(), ATTACKER_KEY),
                ),
            ),
            f"{RFC8725}; RFC 7515 §4.1.5",
        ),
        token_case(
            "ssrf-jwk-carrying-x5u",
            (
                (
                    bearer,
                    "Bearer "
                    + rs(
                        {**rs_header, "jwk": {"kty": "RSA", "x5u": url + "/cert.pem"}},
                        partner_claims(),
                        ATTACKER_KEY,
                    ),
                ),
            ),
            f"{RFC8725}; RFC 7517 §4.6 (x5u in a JWK)",
        ),
        token_case(
            "ssrf-x5c-aia",
            (
                (
                    bearer,
                    "Bearer "
                    + rs(
                        {**rs_header, "x5c": [_certificate_pointing_at(url)]},
                        partner_claims(),
                        ATTACKER_KEY,
                    ),
                ),
            ),
            "RFC 5280 §4.2.2.1 (AIA caIssuers fetching); RFC 7515 §4.1.6",
        ),
        token_case(
            "ssrf-kid-url",
            (
                (
                    bearer,
                    "Bearer "
                    + rs({**rs_header, "kid": url + "/key.pem"}, partner_claims(), ATTACKER_KEY),
                ),
            ),
            f"{RFC8725}; {PORTSWIGGER} (kid)",
        ),
        token_case(
            "ssrf-iss-discovery",
            ((bearer, "Bearer " + rs(rs_header, partner_claims(iss=url), ATTACKER_KEY)),),
            "OpenID Connect Discovery 1.0 §4 (issuer-derived fetches); CWE-918",
        ),
        token_case(
            "ssrf-iss-discovery-real-signature",
            ((bearer, "Bearer " + rs(rs_header, partner_claims(iss=url))),),
            "OpenID Connect Discovery 1.0 §4; CWE-918",
        ),
        Attack(
            "ssrf-kid-url-session-still-verifies",
            b"/api/protected/me",
            200,
            headers=(cookie(hs({"alg": "HS256", "kid": url}, claims())),),
            forwarded=True,
            upstream_has={"x-user-id": "alice"},
            source=f"{RFC8725} (kid selects, never fetches)",
        ),
        Attack(
            "ssrf-jku-in-session-cookie",
            b"/api/protected/me",
            401,
            headers=(cookie(hs({"alg": "HS256", "jku": url}, claims())),),
            code="invalid_token",
            source=RFC8725,
        ),
        Attack(
            "ssrf-aud-url",
            b"/api/protected/me",
            401,
            headers=(cookie(hs({"alg": "HS256"}, claims(aud=url))),),
            code="invalid_token",
            source="RFC 7519 §4.1.3; CWE-918",
        ),
        header_case(
            "ssrf-host",
            "host",
            authority,
            "PortSwigger 'HTTP Host header attacks' (routing-based SSRF)",
        ),
        header_case(
            "ssrf-x-forwarded-host",
            "x-forwarded-host",
            authority,
            "PortSwigger 'HTTP Host header attacks'",
        ),
        header_case(
            "ssrf-forwarded-host", "forwarded", f'host="{authority}"', "RFC 7239 §5.3; CWE-918"
        ),
        header_case("ssrf-x-original-url", "x-original-url", url + "/", "CVE-2018-14773; CWE-918"),
        header_case("ssrf-x-rewrite-url", "x-rewrite-url", url + "/", "CVE-2018-14773; CWE-918"),
        header_case("ssrf-referer", "referer", url + "/", "CWE-918 (Referer-driven fetches)"),
        Attack(
            "ssrf-origin",
            b"/api/v1/reports",
            200,
            headers=(("origin", url), ("x-api-key", API_KEY)),
            forwarded=True,
            source="CWE-918; Fetch standard §3.2",
        ),
        Attack(
            "ssrf-absolute-form",
            url.encode() + b"/public/x",
            400,
            code="bad_request",
            source="PortSwigger 'HTTP Host header attacks' (absolute URL); RFC 9112 §3.2.2",
            on={**FA_NOT_ORIGIN_FORM, "proxy": {"status": 200, "code": None, "forwarded": True}},
        ),
        Attack(
            "ssrf-login-next",
            b"/dashboard?next=" + url.encode(),
            302,
            source="CWE-918; CWE-601",
        ),
        Attack(
            "ssrf-token-in-url-shape",
            b"/api/protected/me",
            401,
            headers=(cookie(url),),
            code="invalid_token",
            source="CWE-918",
        ),
        Attack(
            "ssrf-session-with-url-claims",
            b"/api/protected/me",
            200,
            headers=(cookie(hs({"alg": "HS256"}, claims(jku=url, x5u=url, picture=url))),),
            forwarded=True,
            source=f"{RFC8725} (claims are data, never fetched)",
        ),
        Attack(
            "ssrf-bearer-api-key-url",
            b"/api/v1/reports",
            401,
            headers=((bearer, f"Bearer {url}"),),
            code="invalid_token",
            source="CWE-918",
        ),
    )
