"""`rebadge provision enrol` on the gateway: the gateway key, its CSR, the exchange with a one-time token, the files.

The gateway key is the raw Ed25519 seed the agent signs its journal with (`gateway.key`, 0600, in the 0700 state
dir); the agent makes the same file in the same way, so either may come first. TLS libraries cannot read a raw
seed, so the same key is also written as PKCS#8 PEM (`client.key`, 0600): no second key exists.
"""

from __future__ import annotations

import json
import ssl
import stat
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from durable.dirs import UnusableDirectoryError, make_private_dir
from durable.files import create_exclusively, write_atomically
from wire import x509 as wx
from wire.errors import MalformedError
from wire.ids import GW_ID
from wire.keys import KEY_BYTES, SigningKey

KEY_FILE = "gateway.key"
GATEWAY_ID_FILE = "gateway.id"  # written by `rebadge agent rotate-key`
CLIENT_KEY_FILE = "client.key"
CLIENT_CERT_FILE = "client.crt"
CA_CERT_FILE = "ca.crt"
DIR_MODE = 0o700
SECRET_MODE = 0o600
PUBLIC_MODE = 0o644
# One HTTP exchange with the platform: connect, TLS, the transaction that signs the certificate.
ENROL_TIMEOUT_S = 30.0
MAX_ANSWER_BYTES = 64 * 1024


class EnrolmentError(Exception):
    """Enrolment could not finish; the message says what to do."""


@dataclass(frozen=True)
class EnrolledFiles:
    """Where the enrolled gateway's files are."""

    gw: str
    ca_file: Path
    cert_file: Path
    key_file: Path
    not_after: int

    def config_lines(self) -> str:
        """The agent config to add, as TOML."""
        return f'[mqtt.tls]\nca_file = "{self.ca_file}"\ncert_file = "{self.cert_file}"\nkey_file = "{self.key_file}"\n'


def _check_mode(path: Path, allowed: int, what: str) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & ~allowed:
        raise EnrolmentError(
            f"{what} {path} has mode {mode:04o}, which lets other users read it; run: chmod {allowed:o} {path}"
        )


def load_or_create_key(state_dir: Path) -> SigningKey:
    """The gateway key in `state_dir` (made on first use, as the agent makes it); loose modes are refused."""
    try:
        make_private_dir(state_dir, DIR_MODE, "--state-dir")
    except UnusableDirectoryError as exc:
        raise EnrolmentError(str(exc)) from exc
    _check_mode(state_dir, DIR_MODE, "state directory")
    path = state_dir / KEY_FILE
    if not path.exists():
        key = SigningKey.generate()
        create_exclusively(path, key.seed, SECRET_MODE)
        return key
    _check_mode(path, SECRET_MODE, "gateway key file")
    seed = path.read_bytes()
    if len(seed) != KEY_BYTES:
        raise EnrolmentError(f"gateway key file {path} holds {len(seed)} bytes, not a {KEY_BYTES}-byte Ed25519 key")
    return SigningKey(seed)


def gateway_id(state_dir: Path, key: SigningKey) -> str:
    """The gateway id: what `gateway.id` holds after a key rotation (the agent writes it), else the key's kid."""
    path = state_dir / GATEWAY_ID_FILE
    if not path.exists():
        return key.kid.hex()
    try:
        return GW_ID.check(path.read_text().strip(), "gateway id")
    except MalformedError as exc:
        raise EnrolmentError(f"{path}: {exc}; restore the file from backup (it names this gateway for life)") from exc


def exchange(platform_url: str, token: str, csr: bytes, *, cafile: Path | None = None) -> dict[str, object]:
    """POST the token and CSR to the platform's `/v1/enrol`; the answer's JSON, or EnrolmentError saying why not."""
    url = platform_url.rstrip("/") + "/v1/enrol"
    if not url.startswith(("https://", "http://")):
        raise EnrolmentError(f"--platform {platform_url!r} is not an http:// or https:// URL")
    body = json.dumps({"token": token, "csr": csr.decode()}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")  # noqa: S310 - scheme checked above
    try:
        context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    except ssl.SSLError as exc:
        raise EnrolmentError(
            f"--platform-ca {cafile}: no CA certificate in it ({exc.reason or exc}); give the PEM file of the CA that "
            "signed the platform's HTTPS certificate"
        ) from exc
    try:
        with urllib.request.urlopen(request, timeout=ENROL_TIMEOUT_S, context=context) as answer:  # noqa: S310
            return dict(json.loads(answer.read(MAX_ANSWER_BYTES)))
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read(MAX_ANSWER_BYTES)).get("detail", "")
        except ValueError:
            detail = ""
        raise EnrolmentError(f"the platform refused the enrolment ({exc.code}): {detail or exc.reason}") from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise EnrolmentError(f"cannot reach the platform at {url} ({exc}); check --platform and the network") from exc


def enrol(state_dir: Path, platform_url: str, token: str, *, platform_ca: Path | None = None) -> EnrolledFiles:
    """Enrol this gateway: CSR out, certificate in; write client.crt, ca.crt (0644) and client.key (0600)."""
    key = load_or_create_key(state_dir)
    gw = gateway_id(state_dir, key)
    answer = exchange(platform_url, token, wx.gateway_csr(key, gw), cafile=platform_ca)
    if answer.get("gw") != gw:
        raise EnrolmentError(f"the platform answered for gateway {answer.get('gw')!r}, not {gw}")
    cert, ca = str(answer["certificate"]).encode(), str(answer["ca_certificate"]).encode()
    files = EnrolledFiles(
        gw, state_dir / CA_CERT_FILE, state_dir / CLIENT_CERT_FILE, state_dir / CLIENT_KEY_FILE,
        int(str(answer["not_after"])),
    )  # fmt: skip
    write_atomically(files.key_file, wx.gateway_key_pem(key), SECRET_MODE)
    write_atomically(files.ca_file, ca, PUBLIC_MODE)
    write_atomically(files.cert_file, cert, PUBLIC_MODE)
    return files
