"""The vectors in tests/vectors/: the code makes every positive one byte for byte and refuses every negative one."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import cbor2
import pytest
from pydantic import BaseModel

from simulator.firmware import DeviceState, Firmware
from wire import device, errors, frames55aa
from wire.announce import Announce, parse_announce
from wire.chain import ChainChecker
from wire.device import Firmware as FirmwareKind
from wire.device import Radio, Status
from wire.keys import KeyRing, PublicKey, SigningKey, kid_of
from wire.records import GENESIS, Batch, Record, batch_from_cbor, record_from_cbor
from wire.tokens import (
    Ack,
    Certificate,
    Checkpoint,
    Grant,
    Lease,
    LeaseBundle,
    Payload,
    decode_bundle,
    peek_header,
    sign,
    verify,
)

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"
KINDS: dict[str, type[Payload]] = {
    "certificate": Certificate,
    "lease": Lease,
    "grant": Grant,
    "checkpoint": Checkpoint,
    "ack": Ack,
}
M = TypeVar("M", bound=BaseModel)


@cache
def load(name: str) -> dict[str, Any]:
    """One vector file."""
    data: dict[str, Any] = json.loads((VECTORS / name).read_text())
    return data


def key(name: str) -> SigningKey:
    """A test key from keys.json, checked against its listed public key and kid."""
    entry = load("keys.json")["keys"][name]
    signing = SigningKey(bytes.fromhex(entry["seed"]))
    assert signing.public.raw.hex() == entry["public"]
    assert signing.kid.hex() == entry["kid"] == kid_of(signing.public.raw).hex()
    return signing


def field_value(field: dict[str, Any]) -> Any:
    """A field's Python value from its JSON form (byte strings are hex)."""
    value = field["value"]
    if field["type"].startswith("bstr"):
        return bytes.fromhex(value)
    if field["type"] == "[+ bstr]":
        return [bytes.fromhex(v) for v in value]
    if field["type"] == "[+ tstr]":
        return list(value)
    return value


def build(cls: type[M], fields: list[dict[str, Any]]) -> M:
    """The model a vector describes, made from its listed fields."""
    return cls(**{f["name"]: field_value(f) for f in fields})


def token_cases() -> list[tuple[str, dict[str, Any]]]:
    return sorted(load("tokens.json")["tokens"].items())


def rfc9052_signature_ok(token: bytes, public: PublicKey) -> bool:
    """Check a token the way RFC 9052 §4.4 spells it out, without cwt: Ed25519 over Sig_structure."""
    prot, _, payload, signature = cbor2.loads(token).value
    to_sign = cbor2.dumps(["Signature1", prot, b"", payload])
    try:
        public.verifier().verify(signature, to_sign)
    except Exception:
        return False
    return True


@pytest.mark.parametrize(("name", "vector"), token_cases(), ids=[n for n, _ in token_cases()])
def test_token_is_reproduced_byte_for_byte(name: str, vector: dict[str, Any]) -> None:
    cls = KINDS[vector["kind"]]
    payload = build(cls, vector["fields"])
    signer = key(vector["signer"])
    assert payload.to_cbor().hex() == vector["payload_cbor"]
    token = sign(payload, signer)
    assert token.hex() == vector["token"]
    assert len(token) == vector["token_size"]
    assert hashlib.sha256(token).hexdigest() == vector["token_sha256"]
    assert token[-64:].hex() == vector["signature"]
    assert verify(token, cls, KeyRing([signer.public])) == payload


@pytest.mark.parametrize(("name", "vector"), token_cases(), ids=[n for n, _ in token_cases()])
def test_token_layout_matches_rfc9052_without_cwt(name: str, vector: dict[str, Any]) -> None:
    token = bytes.fromhex(vector["token"])
    signer = key(vector["signer"])
    protected = cbor2.dumps({1: -8, 3: vector["content_type"], 4: signer.kid})
    assert protected.hex() == vector["protected_header"]
    sig_structure = cbor2.dumps(["Signature1", protected, b"", bytes.fromhex(vector["payload_cbor"])])
    assert sig_structure.hex() == vector["sig_structure"]
    outer = cbor2.loads(token)
    assert outer.tag == 18
    assert list(outer.value) == [
        protected,
        {},
        bytes.fromhex(vector["payload_cbor"]),
        bytes.fromhex(vector["signature"]),
    ]
    assert rfc9052_signature_ok(token, signer.public)
    assert peek_header(token) == {1: -8, 3: vector["content_type"], 4: signer.kid}
    assert vector["kid"] == signer.kid.hex()


def test_lease_names_the_certificate_and_gateway_of_the_vectors() -> None:
    tokens = load("tokens.json")["tokens"]
    lease = verify(bytes.fromhex(tokens["lease"]["token"]), Lease, KeyRing([key("issuer").public]))
    assert lease.cert_hash.hex() == tokens["certificate"]["token_sha256"]
    assert lease.gateway_key == key("gateway").public.raw
    assert kid_of(lease.gateway_key) == lease.gateway_kid
    grant = verify(bytes.fromhex(tokens["grant"]["token"]), Grant, KeyRing([PublicKey(lease.gateway_key)]))
    assert (grant.lease_id, grant.new_pid) == (lease.lease_id, lease.new_pid)
    assert lease.slot_lo <= grant.slot < lease.slot_hi


def test_lease_bundle_is_reproduced() -> None:
    vector = load("tokens.json")["lease_bundle"]
    bundle = build(LeaseBundle, vector["fields"])
    assert bundle.to_cbor().hex() == vector["cbor"]
    assert decode_bundle(bytes.fromhex(vector["cbor"])) == bundle
    tokens = load("tokens.json")["tokens"]
    assert bundle.lease.hex() == tokens["lease"]["token"]
    assert bundle.certificate.hex() == tokens["certificate"]["token"]


def test_records_and_chain_are_reproduced() -> None:
    vectors = load("records.json")
    assert bytes.fromhex(vectors["genesis"]) == GENESIS
    records = [build(Record, v["fields"]) for v in vectors["chain"]]
    prev = GENESIS
    for rec, v in zip(records, vectors["chain"], strict=True):
        assert rec.to_cbor().hex() == v["cbor"]
        assert rec.digest().hex() == v["digest"] == hashlib.sha256(bytes.fromhex(v["cbor"])).hexdigest()
        assert record_from_cbor(bytes.fromhex(v["cbor"])) == rec
        assert rec.prev == prev
        prev = rec.digest()
    assert ChainChecker().extend(records).hex() == vectors["head"]
    assert [r.seq for r in records] == [1, 2, 3]


def test_batch_is_reproduced_and_its_checkpoint_covers_the_chain() -> None:
    vectors = load("records.json")
    batch = build(Batch, vectors["batch"]["fields"])
    assert batch.to_cbor().hex() == vectors["batch"]["cbor"]
    decoded = batch_from_cbor(bytes.fromhex(vectors["batch"]["cbor"]))
    assert decoded == batch
    chain = ChainChecker(decoded.gw, seq=decoded.from_seq - 1)
    records = [chain.feed(r) for r in decoded.records]
    head = chain.head
    checkpoint = verify(decoded.checkpoint, Checkpoint, KeyRing([key("gateway").public]))
    assert (checkpoint.seq, checkpoint.head, checkpoint.gw) == (records[-1].seq, head, decoded.gw)
    assert decoded.checkpoint.hex() == load("tokens.json")["tokens"]["checkpoint"]["token"]
    ack = verify(bytes.fromhex(load("tokens.json")["tokens"]["ack"]["token"]), Ack, KeyRing([key("issuer").public]))
    assert (ack.gw, ack.seq, ack.head) == (checkpoint.gw, checkpoint.seq, checkpoint.head)


MESSAGE_TYPES: dict[str, type[BaseModel]] = {
    "info_request": device.InfoRequest,
    "info_response": device.InfoResponse,
    "info_response_after": device.InfoResponse,
    "rebadge_request": device.RebadgeRequest,
    "rebadge_response": device.RebadgeResponse,
}


@pytest.mark.parametrize("name", sorted(MESSAGE_TYPES))
def test_device_message_is_reproduced(name: str) -> None:
    vector = load("device.json")["messages"][name]
    message = build(MESSAGE_TYPES[name], vector["fields"])
    data = bytes.fromhex(vector["cbor"])
    assert message.to_cbor() == data  # type: ignore[attr-defined]
    if name.endswith("request"):
        assert device.decode_request(data) == message
    elif name.startswith("info"):
        assert device.decode_info(data) == message
    else:
        assert device.decode_rebadge(data) == message


def test_rebadge_request_carries_the_token_vectors() -> None:
    request = device.decode_request(bytes.fromhex(load("device.json")["messages"]["rebadge_request"]["cbor"]))
    assert isinstance(request, device.RebadgeRequest)
    tokens = load("tokens.json")["tokens"]
    assert (request.lease.hex(), request.grant.hex()) == (tokens["lease"]["token"], tokens["grant"]["token"])


@pytest.mark.parametrize("name", ["info_request", "rebadge_request"])
def test_55aa_frame_is_reproduced_and_decoded(name: str) -> None:
    vector = load("device.json")["frames55aa"][name]
    frame = frames55aa.Frame(vector["seq"], vector["cmd"], bytes.fromhex(vector["payload"]))
    raw = bytes.fromhex(vector["frame"])
    assert frames55aa.encode(frame) == raw
    assert frames55aa.Decoder().feed(raw) == [frame]
    assert vector["payload"] == load("device.json")["messages"][name]["cbor"]


def test_announce_datagram_is_reproduced_and_parsed() -> None:
    vector = load("device.json")["announce"]
    fields = vector["fields"]
    datagram = vector["datagram"].encode()
    assert Announce(**fields, version="3.3").to_bytes() == datagram
    parsed = parse_announce(datagram)
    assert (parsed.sn, parsed.pid, parsed.ip, parsed.port) == (
        fields["sn"],
        fields["pid"],
        fields["ip"],
        fields["port"],
    )
    assert json.loads(datagram)["productKey"] == fields["pid"]


def negative_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = load("negative.json")["negative"]
    return cases


@pytest.mark.parametrize("vector", negative_cases(), ids=[v["name"] for v in negative_cases()])
def test_negative_token_is_refused_with_its_error_class(vector: dict[str, Any]) -> None:
    ring = KeyRing([key(name).public for name in vector["pinned"]])
    expected = getattr(errors, vector["error"])
    with pytest.raises(errors.WireError) as caught:
        verify(bytes.fromhex(vector["token"]), KINDS[vector["verify_as"]], ring)
    assert type(caught.value) is expected, f"{vector['name']}: {caught.value!r}"


@pytest.mark.parametrize("vector", negative_cases(), ids=[v["name"] for v in negative_cases()])
def test_negative_token_signature_is_as_listed(vector: dict[str, Any]) -> None:
    token = bytes.fromhex(vector["token"])
    outer = cbor2.loads(token)
    prot, _, payload, signature = outer.value if isinstance(outer, cbor2.CBORTag) else outer
    to_sign = cbor2.dumps(["Signature1", prot, b"", payload])
    valid = []
    for name in load("keys.json")["keys"]:
        try:
            key(name).public.verifier().verify(signature, to_sign)
            valid.append(name)
        except Exception:
            continue
    assert valid == ([vector["signed_by"]] if vector["signed_by"] else [])


def test_negative_vectors_cover_the_brief() -> None:
    names = {v["name"] for v in negative_cases()}
    assert {
        "wrong_kind",
        "unknown_kid",
        "flipped_signature_bit",
        "alg_es256",
        "payload_not_deterministic",
        "payload_extra_field",
        "payload_missing_field",
        "payload_pid_9_chars",
        "header_repeated_label",
        "header_crit",
        "header_unknown_label",
        "header_not_deterministic",
        "kid_7_bytes",
    } <= names
    assert {v["error"] for v in negative_cases()} == {
        "WrongKindError",
        "UnknownKeyError",
        "BadSignatureError",
        "MalformedError",
    }


def device_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = load("device_checks.json")["cases"]
    return cases


@pytest.mark.parametrize("case", device_cases(), ids=[c["name"] for c in device_cases()])
async def test_reference_firmware_answers_the_listed_status(case: dict[str, Any]) -> None:
    dev = case["device"]
    receipt = bytes.fromhex(dev["receipt"]) if dev["receipt"] else None
    state = DeviceState(
        sn=dev["sn"], pid=dev["pid"], firmware=FirmwareKind(dev["firmware"]), radio=Radio(dev["radio"]), receipt=receipt
    )
    firmware = Firmware(state, KeyRing([key(name).public for name in case["pinned_issuers"]]))
    lease, grant = bytes.fromhex(case["lease"]), bytes.fromhex(case["grant"])
    status = await firmware.rebadge(lease, grant)
    assert status.value == case["status"]
    if status is Status.OK:
        issuer_ring = KeyRing([key("issuer").public])
        assert (state.pid, state.receipt) == (verify(lease, Lease, issuer_ring).new_pid, grant)
    else:
        assert (state.pid, state.receipt) == (dev["pid"], receipt)


def _make_vectors() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_vectors", ROOT / "tools" / "make_vectors.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vector_files_are_what_the_generator_makes() -> None:
    tool = _make_vectors()
    for name, build_file in tool.FILES.items():
        assert (VECTORS / name).read_text() == tool.render(build_file), f"{name} is stale: run tools/make_vectors.py"
    assert sorted(p.name for p in VECTORS.glob("*.json")) == sorted(tool.FILES)
