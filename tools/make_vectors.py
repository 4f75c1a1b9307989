"""Regenerate the test vectors in tests/vectors/: fixed keys, payloads and the exact bytes wire/ makes of them.

Everything comes from fixed Ed25519 seeds and fixed field values, and Ed25519 signatures are deterministic, so
running this twice gives the same files. From the repository root, with the package installed (`pip install -e .`):

    python tools/make_vectors.py           # (re)write tests/vectors/*.json
    python tools/make_vectors.py --check   # exit 1 if a file is missing or would change

(Not `python -m tools...`: zigpy installs a top-level package named `tools` that would shadow this folder.)

Positive vectors are made with wire/ itself. Negative vectors are COSE_Sign1 built by hand here (RFC 9052 §4.4),
validly signed where the point is that the signature is fine and something else is wrong.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cbor2 import CBORTag, loads
from cbor2 import dumps as plain_dumps
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel

from wire import device, frames55aa
from wire.announce import Announce
from wire.cbor import dumps
from wire.chain import ChainChecker
from wire.device import Firmware, Radio, Status
from wire.keys import SigningKey
from wire.records import GENESIS, Batch, Record, RecordKind
from wire.tokens import (
    ALG_EDDSA,
    COSE_SIGN1_TAG,
    HDR_ALG,
    HDR_CRIT,
    HDR_CTYPE,
    HDR_KID,
    UINT32_END,
    Ack,
    Certificate,
    Checkpoint,
    Grant,
    Kind,
    Lease,
    LeaseBundle,
    Payload,
    sign,
    token_hash,
)

VECTOR_DIR = Path(__file__).resolve().parent.parent / "tests" / "vectors"

# The seeds are public on purpose: these keys sign test vectors only, never anything real.
SEEDS = {
    "issuer": bytes(range(0, 32)),  # the platform's issuer key
    "gateway": bytes(range(32, 64)),  # the gateway key the lease names
    "stranger": bytes(range(64, 96)),  # pinned by nobody
}
KEYS = {name: SigningKey(seed) for name, seed in SEEDS.items()}

T0 = 1767312000  # 2026-01-02T00:00:00Z
ORIGINAL_PID = "stock001"
NEW_PID = "brand001"
SN = "SN-2026-000123"
GW = KEYS["gateway"].kid.hex()  # a gateway's id is the hex of its key id


def certificate() -> Certificate:
    """The replacement certificate every other vector hangs from."""
    return Certificate(
        cert_no="RC000001",
        factory="Example Factory Ltd",
        original_pid=ORIGINAL_PID,
        new_pid=NEW_PID,
        quantity=1000,
        protocols=("wifi", "ble", "zigbee"),
        nbf=T0 - 86400,
        exp=T0 + 365 * 86400,
    )


def lease(cert_token: bytes, **changes: Any) -> Lease:
    """Slots [0, 100) of the certificate for the gateway key; `changes` override fields."""
    gateway = KEYS["gateway"].public
    fields: dict[str, Any] = {
        "lease_id": "L0001",
        "cert_no": "RC000001",
        "cert_hash": token_hash(cert_token),
        "original_pid": ORIGINAL_PID,
        "new_pid": NEW_PID,
        "gateway_key": gateway.raw,
        "gateway_kid": gateway.kid,
        "slot_lo": 0,
        "slot_hi": 100,
        "exp": T0 + 30 * 86400,
    }
    return Lease(**{**fields, **changes})


def grant(**changes: Any) -> Grant:
    """Slot 7 of lease L0001 for the device SN; `changes` override fields."""
    fields: dict[str, Any] = {"lease_id": "L0001", "slot": 7, "sn": SN, "new_pid": NEW_PID, "iat": T0 + 3600}
    return Grant(**{**fields, **changes})


# --- how values are written into JSON --------------------------------------------------------------------------


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, tuple | list):
        return [_json_value(v) for v in value]
    return value


def _cbor_type(value: Any) -> str:
    if isinstance(value, bytes):
        return f"bstr .size {len(value)}"
    if isinstance(value, tuple | list):
        return "[+ bstr]" if all(isinstance(v, bytes) for v in value) else "[+ tstr]"
    if value is None:
        return "null"
    if isinstance(value, int):
        return "uint"
    return "tstr"


def fields_of(model: BaseModel) -> list[dict[str, Any]]:
    """Each field present in the CBOR map: its name, its short CBOR key, its CBOR type and its value (bytes in hex)."""
    out = []
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if value is None and isinstance(model, Payload):
            continue  # optional token fields are left out of the map, never sent as null
        raw = value.value if hasattr(value, "value") else value  # enums travel as their text
        out.append({"name": name, "key": info.alias or name, "type": _cbor_type(raw), "value": _json_value(raw)})
    return out


def token_vector(payload: Payload, signer: str) -> dict[str, Any]:
    """A signed token with everything a verifier needs to check it step by step."""
    token = sign(payload, KEYS[signer])
    protected = dumps({HDR_ALG: ALG_EDDSA, HDR_CTYPE: payload.KIND.value, HDR_KID: KEYS[signer].kid})
    return {
        "kind": type(payload).__name__.lower(),
        "content_type": payload.KIND.value,
        "signer": signer,
        "kid": KEYS[signer].kid.hex(),
        "fields": fields_of(payload),
        "payload_cbor": payload.to_cbor().hex(),
        "protected_header": protected.hex(),
        "sig_structure": dumps(["Signature1", protected, b"", payload.to_cbor()]).hex(),
        "signature": token[-64:].hex(),
        "token": token.hex(),
        "token_size": len(token),
        "token_sha256": token_hash(token).hex(),
    }


def raw_sign1(
    protected: dict[int, Any] | bytes, payload: bytes, signer: str, *, unprotected: dict[int, Any] | None = None
) -> bytes:
    """A COSE_Sign1 built by hand (RFC 9052 §4.4), so that negative vectors can carry what wire/ never makes.

    `protected` is a map to encode deterministically, or the exact header bytes to sign over.
    """
    prot = protected if isinstance(protected, bytes) else dumps(protected)
    to_sign = dumps(["Signature1", prot, b"", payload])
    signature = Ed25519PrivateKey.from_private_bytes(SEEDS[signer]).sign(to_sign)
    return dumps(CBORTag(COSE_SIGN1_TAG, [prot, unprotected or {}, payload, signature]))


def _repeated_label_header() -> bytes:
    """The issuer's lease header with content type written twice, the grant's first (cbor2 keeps the last)."""
    entries = [(HDR_ALG, ALG_EDDSA), (HDR_CTYPE, Kind.GRANT.value), (HDR_CTYPE, Kind.LEASE.value)]
    entries.append((HDR_KID, KEYS["issuer"].kid))
    return b"\xa4" + b"".join(dumps(label) + dumps(value) for label, value in entries)


def header(kind: Kind, signer: str) -> dict[int, Any]:
    """The protected header wire/ puts on a token of `kind` signed by `signer`."""
    return {HDR_ALG: ALG_EDDSA, HDR_CTYPE: kind.value, HDR_KID: KEYS[signer].kid}


# --- the files -------------------------------------------------------------------------------------------------


def keys_file() -> dict[str, Any]:
    """keys.json: the seeds, public keys and kids."""
    return {
        "about": "Ed25519 test keys. seed = the 32-byte private key (RFC 8032); kid = SHA-256(public)[:8].",
        "keys": {
            name: {"seed": key.seed.hex(), "public": key.public.raw.hex(), "kid": key.kid.hex()}
            for name, key in KEYS.items()
        },
    }


def chain() -> list[Record]:
    """Three records of one gateway, each linked to the one before it."""
    common: dict[str, Any] = {"gw": GW, "lease_id": "L0001", "old_pid": ORIGINAL_PID, "new_pid": NEW_PID}
    specs = [
        (RecordKind.RESERVED, 7, SN, T0 + 3600),
        (RecordKind.CONFIRMED, 7, SN, T0 + 3602),
        (RecordKind.RESERVED, 8, "SN-2026-000124", T0 + 3660),
    ]
    out: list[Record] = []
    prev = GENESIS
    for seq, (kind, slot, sn, at) in enumerate(specs, start=1):
        rec = Record(**common, seq=seq, prev=prev, kind=kind, slot=slot, sn=sn, radio="wifi", at=at)
        out.append(rec)
        prev = rec.digest()
    return out


def tokens_file() -> dict[str, Any]:
    """tokens.json: one signed token of every kind, the lease bundle, and the largest lease and grant."""
    cert = certificate()
    cert_token = sign(cert, KEYS["issuer"])
    lease_token = sign(lease(cert_token), KEYS["issuer"])
    head = ChainChecker(GW).extend(chain())
    checkpoint = Checkpoint(gw=GW, seq=3, head=head, at=T0 + 3700)
    bundle = LeaseBundle(lease=lease_token, certificate=cert_token)
    return {
        "about": "Signed tokens (COSE_Sign1, EdDSA). Byte strings are hex. Keys are in keys.json.",
        "tokens": {
            "certificate": token_vector(cert, "issuer"),
            "lease": token_vector(lease(cert_token), "issuer"),
            "grant": token_vector(grant(), "gateway"),
            "checkpoint": token_vector(checkpoint, "gateway"),
            "checkpoint_with_counter": token_vector(checkpoint.model_copy(update={"counter": 42}), "gateway"),
            "ack": token_vector(Ack(gw=GW, seq=3, head=head, at=T0 + 3701), "issuer"),
            "lease_worst_case": token_vector(worst_lease(), "issuer"),
            "grant_worst_case": token_vector(worst_grant(), "gateway"),
        },
        "lease_bundle": {
            "about": "A lease file: the lease and the certificate it names (not signed itself).",
            "fields": fields_of(bundle),
            "cbor": bundle.to_cbor().hex(),
        },
    }


def worst_lease() -> Lease:
    """The largest lease the model allows: longest ids, 16-character PIDs, u32 maxima."""
    top = UINT32_END - 1
    return lease(
        b"\xff" * 32,
        lease_id="L" * 10,
        cert_no="C" * 12,
        original_pid="o" * 16,
        new_pid="n" * 16,
        slot_lo=top - 1,
        slot_hi=top,
        exp=top,
    )


def worst_grant() -> Grant:
    """The largest grant the model allows: longest lease id and SN, a 16-character PID, u32 maxima."""
    top = UINT32_END - 1
    return grant(lease_id="L" * 10, slot=top, sn="S" * 28, new_pid="n" * 16, iat=top)


def records_file() -> dict[str, Any]:
    """records.json: a 3-record chain with digests, and the batch that carries it with its checkpoint."""
    records = chain()
    checkpoint_token = sign(Checkpoint(gw=GW, seq=3, head=records[-1].digest(), at=T0 + 3700), KEYS["gateway"])
    batch = Batch(gw=GW, from_seq=1, records=[r.to_cbor() for r in records], checkpoint=checkpoint_token)
    return {
        "about": "Journal records: digest = SHA-256(record CBOR); record n's prev = record n-1's digest; "
        "the first record's prev is 32 zero bytes. The checkpoint token is tokens.json's 'checkpoint'.",
        "genesis": GENESIS.hex(),
        "chain": [{"fields": fields_of(r), "cbor": r.to_cbor().hex(), "digest": r.digest().hex()} for r in records],
        "head": records[-1].digest().hex(),
        "batch": {"fields": fields_of(batch), "cbor": batch.to_cbor().hex()},
    }


def device_file() -> dict[str, Any]:
    """device.json: the four device messages, two 55AA frames and an announce datagram."""
    cert_token = sign(certificate(), KEYS["issuer"])
    lease_token = sign(lease(cert_token), KEYS["issuer"])
    grant_token = sign(grant(), KEYS["gateway"])
    info_req = device.InfoRequest(id=1)
    rebadge_req = device.RebadgeRequest(id=2, lease=lease_token, grant=grant_token)
    messages: dict[str, BaseModel] = {
        "info_request": info_req,
        "info_response": device.InfoResponse(
            id=1, sn=SN, pid=ORIGINAL_PID, firmware=Firmware.OEM, fw_version="1.0.0", radio=Radio.WIFI
        ),
        "rebadge_request": rebadge_req,
        "rebadge_response": device.RebadgeResponse(id=2, status=Status.OK, pid=NEW_PID),
        "info_response_after": device.InfoResponse(
            id=3, sn=SN, pid=NEW_PID, firmware=Firmware.OEM, fw_version="1.0.0", radio=Radio.WIFI, receipt=grant_token
        ),
    }
    frames = {
        "info_request": frames55aa.Frame(seq=1, cmd=frames55aa.Command.INFO, payload=info_req.to_cbor()),
        "rebadge_request": frames55aa.Frame(seq=2, cmd=frames55aa.Command.REBADGE, payload=rebadge_req.to_cbor()),
    }
    announce = Announce(sn=SN, pid=ORIGINAL_PID, ip="192.168.4.23", port=6668, version="3.3")
    return {
        "about": "Device messages are deterministic CBOR maps; 'rebadge_request' carries tokens.json's lease "
        "and grant; 'info_response_after' is the same device after that rebadge, its receipt the grant.",
        "messages": {
            name: {"fields": fields_of(msg), "cbor": msg.to_cbor().hex()}  # type: ignore[attr-defined]
            for name, msg in messages.items()
        },
        "frames55aa": {
            name: {"seq": f.seq, "cmd": f.cmd, "payload": f.payload.hex(), "frame": frames55aa.encode(f).hex()}
            for name, f in frames.items()
        },
        "announce": {
            "fields": {"sn": announce.sn, "pid": announce.pid, "ip": announce.ip, "port": announce.port},
            "datagram": announce.to_bytes().decode(),
            "port": 6669,
        },
    }


def _negative(name: str, about: str, verify_as: str, pinned: list[str], token: bytes, error: str) -> dict[str, Any]:
    return {
        "name": name,
        "about": about,
        "verify_as": verify_as,
        "pinned": pinned,
        "token": token.hex(),
        "error": error,
        "signed_by": _signed_by(token),
    }


def _signed_by(token: bytes) -> str | None:
    """Which test key's Ed25519 signature over the token's Sig_structure checks out, if any (tag or no tag)."""
    try:
        outer = loads(token)
        prot, _, payload, signature = outer.value if isinstance(outer, CBORTag) else outer
        to_sign = dumps(["Signature1", prot, b"", payload])
    except (ValueError, TypeError):
        return None
    for name, key in KEYS.items():
        try:
            key.public.verifier().verify(signature, to_sign)
        except InvalidSignature:
            continue
        return name
    return None


def _replace_once(data: bytes, old: bytes, new: bytes) -> bytes:
    if data.count(old) != 1:
        raise ValueError(f"{old.hex()} occurs {data.count(old)} times, expected once")
    return data.replace(old, new)


def _lease_payload_variants(cert_token: bytes) -> dict[str, bytes]:
    good = lease(cert_token)
    short = good.model_dump(by_alias=True)
    missing = {k: v for k, v in short.items() if k != "x"}
    return {
        "unsorted": plain_dumps(short),  # keys in declaration order, not sorted: valid CBOR, not deterministic
        "long_int": _replace_once(dumps(short), b"blo\x00", b"blo\x1a\x00\x00\x00\x00"),  # lo: 0 in 5 bytes
        "extra": dumps({**short, "zz": 1}),
        "missing": dumps(missing),
        "pid9": dumps({**short, "op": "stock0012"}),
    }


def negative_file() -> dict[str, Any]:
    """negative.json: tokens a verifier must refuse, with the wire.errors class it refuses them with."""
    cert_token = sign(certificate(), KEYS["issuer"])
    lease_token = sign(lease(cert_token), KEYS["issuer"])
    payload = lease(cert_token).to_cbor()
    variants = _lease_payload_variants(cert_token)
    issuer_lease = header(Kind.LEASE, "issuer")
    flipped = bytearray(lease_token)
    flipped[-1] ^= 0x01
    parts = list(loads(lease_token).value)
    parts[2] = _replace_once(parts[2], b"bhi\x18\x64", b"bhi\x19\x03\xe8")  # hi: 100 -> 1000 after signing
    tampered = dumps(CBORTag(COSE_SIGN1_TAG, parts))
    negatives = [
        _negative("wrong_kind", "a valid certificate offered where a lease is expected", "lease", ["issuer"],
                  cert_token, "WrongKindError"),
        _negative("grant_as_lease", "a valid grant offered as a lease: its kid is no issuer's", "lease", ["issuer"],
                  sign(grant(), KEYS["gateway"]), "UnknownKeyError"),
        _negative("unknown_kid", "a lease signed by a key nobody pinned", "lease", ["issuer"],
                  sign(lease(cert_token), KEYS["stranger"]), "UnknownKeyError"),
        _negative("flipped_signature_bit", "the last bit of the lease's signature flipped", "lease", ["issuer"],
                  bytes(flipped), "BadSignatureError"),
        _negative("tampered_payload", "slot_hi raised from 100 to 1000 after signing", "lease", ["issuer"],
                  tampered, "BadSignatureError"),
        _negative("alg_es256", "alg -7 (ES256) in the protected header, signed with the issuer's Ed25519 key",
                  "lease", ["issuer"], raw_sign1({**issuer_lease, HDR_ALG: -7}, payload, "issuer"),
                  "BadSignatureError"),
        _negative("alg_missing", "no alg in the protected header, otherwise valid", "lease", ["issuer"],
                  raw_sign1({k: v for k, v in issuer_lease.items() if k != HDR_ALG}, payload, "issuer"),
                  "BadSignatureError"),
        _negative("kid_missing", "no kid in the protected header", "lease", ["issuer"],
                  raw_sign1({k: v for k, v in issuer_lease.items() if k != HDR_KID}, payload, "issuer"),
                  "MalformedError"),
        _negative("header_repeated_label", "content type twice in the protected header (grant, then lease), validly "
                  "signed: a decoder that keeps the last label sees a lease", "lease", ["issuer"],
                  raw_sign1(_repeated_label_header(), payload, "issuer"), "MalformedError"),
        _negative("header_crit", "crit (label 2) naming the content type, validly signed", "lease", ["issuer"],
                  raw_sign1({**issuer_lease, HDR_CRIT: [HDR_CTYPE]}, payload, "issuer"), "MalformedError"),
        _negative("header_unknown_label", "label 33 (x5chain) in the protected header, validly signed", "lease",
                  ["issuer"], raw_sign1({**issuer_lease, 33: b"\x30"}, payload, "issuer"), "MalformedError"),
        _negative("header_not_deterministic", "protected header labels in the order 4, 3, 1, validly signed",
                  "lease", ["issuer"], raw_sign1(plain_dumps(dict(reversed(issuer_lease.items()))), payload, "issuer"),
                  "MalformedError"),
        _negative("kid_7_bytes", "a 7-byte kid (the issuer's, cut short), validly signed", "lease", ["issuer"],
                  raw_sign1({**issuer_lease, HDR_KID: KEYS["issuer"].kid[:7]}, payload, "issuer"), "MalformedError"),
        _negative("kid_unprotected", "a kid in the unprotected header (it must be empty)", "lease", ["issuer"],
                  raw_sign1(issuer_lease, payload, "issuer", unprotected={HDR_KID: KEYS["issuer"].kid}),
                  "MalformedError"),
        _negative("trailing_byte", "a valid lease followed by one more byte", "lease", ["issuer"],
                  lease_token + b"\x00", "MalformedError"),
        _negative("untagged", "a valid lease without its COSE_Sign1 tag 18", "lease", ["issuer"],
                  lease_token[1:], "MalformedError"),
        _negative("payload_not_deterministic", "payload map keys not in sorted order, validly signed", "lease",
                  ["issuer"], raw_sign1(issuer_lease, variants["unsorted"], "issuer"), "MalformedError"),
        _negative("payload_long_int", "slot_lo 0 written as a 5-byte integer, validly signed", "lease",
                  ["issuer"], raw_sign1(issuer_lease, variants["long_int"], "issuer"), "MalformedError"),
        _negative("payload_extra_field", "an unknown field 'zz' in the payload, validly signed", "lease",
                  ["issuer"], raw_sign1(issuer_lease, variants["extra"], "issuer"), "MalformedError"),
        _negative("payload_missing_field", "no exp ('x') in the payload, validly signed", "lease", ["issuer"],
                  raw_sign1(issuer_lease, variants["missing"], "issuer"), "MalformedError"),
        _negative("payload_pid_9_chars", "original_pid of 9 characters, validly signed", "lease", ["issuer"],
                  raw_sign1(issuer_lease, variants["pid9"], "issuer"), "MalformedError"),
    ]  # fmt: skip
    return {
        "about": "Tokens to refuse. 'pinned' names the keys (keys.json) the verifier trusts; 'error' is the "
        "wire.errors class wire.tokens.verify raises; 'signed_by' names the key whose signature over the token's "
        "Sig_structure is valid (null: none is), so a valid signature alone must not make a verifier accept.",
        "negative": negatives,
    }


def _device_case(
    name: str, about: str, status: Status, lease_token: bytes, grant_token: bytes, **state: Any
) -> dict[str, Any]:
    dev: dict[str, Any] = {"sn": SN, "pid": ORIGINAL_PID, "firmware": "oem", "radio": "wifi", "receipt": None}
    dev.update(state)
    return {
        "name": name,
        "about": about,
        "device": dev,
        "pinned_issuers": ["issuer"],
        "lease": lease_token.hex(),
        "grant": grant_token.hex(),
        "status": status.value,
    }


def device_checks_file() -> dict[str, Any]:
    """device_checks.json: a lease and grant offered to a device, and the status the device must answer."""
    cert_token = sign(certificate(), KEYS["issuer"])
    issuer, gateway, stranger = KEYS["issuer"], KEYS["gateway"], KEYS["stranger"]
    lease_token = sign(lease(cert_token), issuer)
    grant_token = sign(grant(), gateway)
    long_pid = "brand00000000001"
    cases = [
        _device_case("ok", "everything holds", Status.OK, lease_token, grant_token),
        _device_case("already_done", "the device holds this very grant as its receipt", Status.ALREADY_DONE,
                     lease_token, grant_token, pid=NEW_PID, receipt=grant_token.hex()),
        _device_case("wrong_sn", "the grant names another SN", Status.WRONG_SN, lease_token,
                     sign(grant(sn="SN-2026-000999"), gateway)),
        _device_case("wrong_pid", "the device's PID is not the lease's original PID", Status.WRONG_PID,
                     lease_token, grant_token, pid="other001"),
        _device_case("slot_at_hi", "slot == slot_hi lies outside [lo, hi)", Status.SLOT_OUT_OF_RANGE,
                     lease_token, sign(grant(slot=100), gateway)),
        _device_case("slot_below_lo", "slot below slot_lo", Status.SLOT_OUT_OF_RANGE,
                     sign(lease(cert_token, slot_lo=10, slot_hi=20), issuer), grant_token),
        _device_case("lease_id_mismatch", "grant.lease_id differs from lease.lease_id", Status.BAD_SIGNATURE,
                     lease_token, sign(grant(lease_id="L0002"), gateway)),
        _device_case("new_pid_mismatch", "grant.new_pid differs from lease.new_pid", Status.BAD_SIGNATURE,
                     lease_token, sign(grant(new_pid="brand002"), gateway)),
        _device_case("gateway_kid_mismatch", "kid_of(lease.gk) differs from lease.gi", Status.BAD_SIGNATURE,
                     sign(lease(cert_token, gateway_kid=stranger.kid), issuer), grant_token),
        _device_case("grant_by_other_key", "the grant is signed by a key other than lease.gk", Status.UNKNOWN_KEY,
                     lease_token, sign(grant(), stranger)),
        _device_case("grant_signature_flipped", "the grant's signature has one bit flipped",
                     Status.BAD_SIGNATURE, lease_token, grant_token[:-1] + bytes([grant_token[-1] ^ 1])),
        _device_case("lease_unknown_issuer", "the lease is signed by a key the device does not pin",
                     Status.UNKNOWN_KEY, sign(lease(cert_token), stranger), grant_token),
        _device_case("lease_garbage", "the lease is not a COSE_Sign1 at all", Status.MALFORMED, b"\x00",
                     grant_token),
        _device_case("general_over_ble", "general firmware cannot be rebadged over BLE",
                     Status.UNSUPPORTED_FIRMWARE, lease_token, grant_token, firmware="general", radio="ble"),
        _device_case("ble_16_char_pid", "a BLE device cannot take a 16-character PID",
                     Status.UNSUPPORTED_FIRMWARE, sign(lease(cert_token, new_pid=long_pid), issuer),
                     sign(grant(new_pid=long_pid), gateway), radio="ble"),
    ]  # fmt: skip
    return {
        "about": "Offer 'lease' and 'grant' to a device in state 'device' that pins 'pinned_issuers'; it answers "
        "'status'. On 'ok' its PID becomes the lease's new_pid and the grant becomes its receipt.",
        "cases": cases,
    }


FILES: dict[str, Callable[[], dict[str, Any]]] = {
    "keys.json": keys_file,
    "tokens.json": tokens_file,
    "records.json": records_file,
    "device.json": device_file,
    "negative.json": negative_file,
    "device_checks.json": device_checks_file,
}


def render(build: Callable[[], dict[str, Any]]) -> str:
    """One vector file's text: stable key order, two-space indent, final newline."""
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the vector files, or with --check report the ones that differ."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if a file would change")
    args = parser.parse_args(argv)
    stale = []
    for name, build in FILES.items():
        path = VECTOR_DIR / name
        text = render(build)
        if path.exists() and path.read_text() == text:
            continue
        stale.append(name)
        if not args.check:
            VECTOR_DIR.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    verb = "differ" if args.check else "written"
    print(f"{len(stale)} vector file(s) {verb}: {', '.join(stale) or '-'}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
