"""The API's endpoints. Each checks the caller's role and organisation in the store function it runs."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from cloud_bridge import accounts, anomalies, certificates, enrolment, gateways, leases, requests
from cloud_bridge.accounts import Actor
from cloud_bridge.anomalies import AnomalyKind
from cloud_bridge.api.deps import ActorDep, PlatformDep
from cloud_bridge.api.ledger_routes import ledger
from cloud_bridge.api.models import (
    AccountCreated,
    AccountIn,
    AccountOut,
    ActivationIn,
    ActivationOut,
    AnomalyOut,
    ApplicationIn,
    AuditIn,
    CertificateOut,
    EnrolIn,
    EnrolmentTokenIn,
    EnrolmentTokenOut,
    EnrolOut,
    GatewayIn,
    GatewayOut,
    LeaseIn,
    LeaseIssued,
    LeaseOut,
    Me,
    OrgIn,
    OrgOut,
    Problem,
    ReleaseIn,
    ReleaseOut,
    RevokeIn,
)
from cloud_bridge.api.order_routes import purchase
from cloud_bridge.api.product_routes import catalogue
from cloud_bridge.api.scan_routes import scans
from cloud_bridge.errors import InvalidRequestError
from cloud_bridge.platform import Platform
from wire.ids import CertNo, GatewayId, LeaseId, Pid
from wire.keys import PublicKey

# Path parameters: the IDs of wire.ids, checked by the same functions as every wire model.
CertNoPath = Annotated[CertNo, Path()]
LeaseIdPath = Annotated[LeaseId, Path()]
GwIdPath = Annotated[GatewayId, Path()]
PidPath = Annotated[Pid, Path()]

ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": Problem} for code in (401, 403, 404, 409, 413, 422)}

public = APIRouter(tags=["public"], responses={413: {"model": Problem}, 422: {"model": Problem}})
people = APIRouter(tags=["organisations and accounts"], responses=ERRORS)
goods = APIRouter(tags=["products and certificates"], responses=ERRORS)
line = APIRouter(tags=["gateways, leases and anomalies"], responses=ERRORS)


def _b64(value: str, field: str) -> bytes:
    try:
        return base64.b64decode(value.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequestError(f"{field} is not base64 ({exc})", field=field) from exc


def _row(row: Any) -> dict[str, Any]:
    return dict(row._mapping)


@public.get("/health")
async def health() -> dict[str, str]:
    """Liveness: answers without touching the database."""
    return {"status": "ok"}


@public.post("/activations", response_model=ActivationOut, responses={409: {"model": ActivationOut}})
async def activate(body: ActivationIn, platform: PlatformDep) -> Any:
    """A device presents SN, PID and receipt; each (lease, slot) activates once, each SN once per certificate."""
    result = await platform.activate(body.sn, body.pid, _b64(body.receipt, "receipt"))
    out = ActivationOut(
        verdict=result.verdict, message=result.message, cert_no=result.cert_no, lease_id=result.lease_id,
        slot=result.slot,
    )  # fmt: skip
    if result.accepted:
        return out
    status = 422 if result.verdict == "invalid_receipt" else 409
    return JSONResponse(out.model_dump(mode="json"), status_code=status)


@people.get("/me")
async def me(actor: ActorDep) -> Me:
    """Who the API key belongs to."""
    return Me(account_id=actor.account_id, org_id=actor.org_id, name=actor.name, role=actor.role)


@people.post("/orgs", status_code=201)
async def create_org(body: OrgIn, actor: ActorDep, platform: PlatformDep) -> OrgOut:
    """Create an organisation (admins)."""
    org_id = await platform.run(accounts.create_org, actor, body.name, body.kind, platform.now())
    return OrgOut(id=org_id, name=body.name, kind=body.kind)


@people.get("/orgs")
async def list_orgs(actor: ActorDep, platform: PlatformDep) -> list[OrgOut]:
    """Organisations: all for platform staff, otherwise your own."""
    return [OrgOut.model_validate(_row(r)) for r in await platform.run(accounts.list_orgs, actor)]


@people.post("/accounts", status_code=201)
async def create_account(body: AccountIn, actor: ActorDep, platform: PlatformDep) -> AccountCreated:
    """Create an account; its API key is in the answer, once."""
    account_id, key = await platform.run(
        accounts.create_account, actor, body.org_id, body.name, body.role, platform.now()
    )
    return AccountCreated(id=account_id, api_key=key)


@people.get("/accounts")
async def list_accounts(actor: ActorDep, platform: PlatformDep) -> list[AccountOut]:
    """Accounts: all for admins, your organisation's for its admin."""
    return [AccountOut.model_validate(_row(r)) for r in await platform.run(accounts.list_accounts, actor)]


async def _credentials(platform: Platform, actor: Actor, cert_no: str | None = None) -> list[CertificateOut]:
    rows = await platform.run(certificates.credentials, actor, cert_no)
    stale = await platform.run(leases.stale_holds, [r.cert_no for r in rows if r.cert_no], platform.now())
    out = []
    for row in rows:
        fields = _row(row)
        token = fields.pop("token", None)
        fields |= {
            "token": base64.b64encode(token).decode() if token else None,
            "stale_held": stale.get(row.cert_no, 0),
        }
        out.append(CertificateOut.model_validate(fields))
    return out


@goods.post("/certificates", status_code=201)
async def apply(body: ApplicationIn, actor: ActorDep, platform: PlatformDep) -> CertificateOut:
    """Apply for a replacement certificate for one of your products in trial or mass production."""
    application = certificates.Application(
        body.original_pid, body.new_pid, body.quantity, body.reason, tuple(body.protocols), body.valid_days * 86400
    )
    cert_no = await platform.run(certificates.apply_as, actor, application, now=platform.now())
    return (await _credentials(platform, actor, cert_no))[0]


@goods.get("/certificates")
async def credential_list(actor: ActorDep, platform: PlatformDep) -> list[CertificateOut]:
    """The credential list: PIDs, replaced / total, audit status, number, applicant."""
    return await _credentials(platform, actor)


@goods.get("/certificates/{cert_no}")
async def certificate(cert_no: CertNoPath, actor: ActorDep, platform: PlatformDep) -> CertificateOut:
    """One certificate with its live counts."""
    return (await _credentials(platform, actor, cert_no))[0]


@goods.post("/certificates/{cert_no}/audit")
async def audit(cert_no: CertNoPath, body: AuditIn, actor: ActorDep, platform: PlatformDep) -> CertificateOut:
    """Approve (which signs the certificate) or reject a pending application (auditors)."""
    await platform.run(
        certificates.audit,
        actor,
        cert_no,
        approve_it=body.approve,
        comment=body.comment,
        issuer=platform.issuer,
        now=platform.now(),
    )
    return (await _credentials(platform, actor, cert_no))[0]


@goods.post("/certificates/{cert_no}/revoke")
async def revoke(cert_no: CertNoPath, body: RevokeIn, actor: ActorDep, platform: PlatformDep) -> CertificateOut:
    """Revoke an approved certificate: no more leases (auditors, admins)."""
    await platform.run(certificates.revoke, actor, cert_no, comment=body.comment, now=platform.now())
    return (await _credentials(platform, actor, cert_no))[0]


@line.post("/certificates/{cert_no}/leases", status_code=201)
async def issue_lease(cert_no: CertNoPath, body: LeaseIn, actor: ActorDep, platform: PlatformDep) -> LeaseIssued:
    """Lease slots to a gateway (registered to your organisation on first use); the answer holds the lease file."""
    lease, _, bundle = await platform.run(
        leases.issue_as,
        actor,
        cert_no,
        PublicKey(bytes.fromhex(body.gateway_key)),
        body.slots,
        valid_s=body.valid_s,
        policy=platform.policy,
        issuer=platform.issuer,
        now=platform.now(),
    )
    stored = await platform.run(leases.get, lease.lease_id)  # its gateway id: not the key's kid after a rotation
    return LeaseIssued(
        lease_id=lease.lease_id, cert_no=lease.cert_no, gw=stored.gw, slot_lo=lease.slot_lo,
        slot_hi=lease.slot_hi, exp=lease.exp, state="active", bundle=base64.b64encode(bundle).decode(),
    )  # fmt: skip


@line.get("/certificates/{cert_no}/leases")
async def list_leases(cert_no: CertNoPath, actor: ActorDep, platform: PlatformDep) -> list[LeaseOut]:
    """A certificate's leases."""
    return [LeaseOut.model_validate(_row(r)) for r in await platform.run(leases.list_for, actor, cert_no)]


@line.post("/leases/{lease_id}/release")
async def release(lease_id: LeaseIdPath, body: ReleaseIn, actor: ActorDep, platform: PlatformDep) -> ReleaseOut:
    """Hand in a gateway's signed release of a lease; its unused slots return once its records are in."""
    answer = await platform.run(requests.release_as, actor, lease_id, _b64(body.release, "release"), now=platform.now())
    return ReleaseOut(code=answer.code.value, message=answer.message, returned=answer.returned)


@line.post("/gateways", status_code=201)
async def register_gateway(body: GatewayIn, actor: ActorDep, platform: PlatformDep) -> GatewayOut:
    """Register a gateway's public key to your factory (an admin names the factory)."""
    key = PublicKey(bytes.fromhex(body.public_key))
    gw = await platform.run(gateways.register_as, actor, key, body.name, platform.now(), org_id=body.org_id)
    return _gateway(await platform.run(_visible_gateway, actor, gw))


async def _visible_gateway(conn: Any, actor: Any, gw: str) -> Any:
    rows = await gateways.list_visible(conn, actor)
    return next(r for r in rows if r.gw == gw)


def _gateway(row: Any) -> GatewayOut:
    return GatewayOut(
        gw=row.gw, name=row.name, public_key=bytes(row.public_key).hex(), revoked=row.revoked, acked_seq=row.seq
    )


@line.post("/enrolment-tokens", status_code=201)
async def create_enrolment_token(body: EnrolmentTokenIn, actor: ActorDep, platform: PlatformDep) -> EnrolmentTokenOut:
    """A one-time, expiring token with which one gateway enrols to your factory (shown once)."""
    token, expires_at = await platform.run(
        enrolment.create_token, actor, body.line, body.valid_s, platform.now(), org_id=body.org_id
    )
    org_id = body.org_id if body.org_id is not None and actor.role == accounts.Role.ADMIN else actor.org_id
    assert org_id is not None
    return EnrolmentTokenOut(token=token, org_id=org_id, line=body.line, expires_at=expires_at)


@public.post("/enrol", responses={403: {"model": Problem}, 409: {"model": Problem}})
async def enrol(body: EnrolIn, platform: PlatformDep) -> EnrolOut:
    """A gateway exchanges its enrolment token and CSR for a client certificate (the token is the credential)."""
    done = await platform.enrol(body.token, body.csr.encode())
    return EnrolOut(
        gw=done.gw, certificate=done.certificate.decode(), ca_certificate=done.ca_certificate.decode(),
        not_after=done.not_after,
    )  # fmt: skip


@line.get("/gateways")
async def list_gateways(actor: ActorDep, platform: PlatformDep) -> list[GatewayOut]:
    """Gateways with the seq the platform has acked."""
    return [_gateway(r) for r in await platform.run(gateways.list_visible, actor)]


@line.post("/gateways/{gw}/revoke")
async def revoke_gateway(gw: GwIdPath, actor: ActorDep, platform: PlatformDep) -> GatewayOut:
    """Revoke a gateway: no more leases; its batches become anomalies, not counts."""
    await platform.run(gateways.revoke_as, actor, gw, platform.now())
    return _gateway(await platform.run(_visible_gateway, actor, gw))


@line.get("/anomalies")
async def list_anomalies(
    actor: ActorDep,
    platform: PlatformDep,
    kind: AnomalyKind | None = None,
    gw: Annotated[str | None, Query(pattern=r"^[0-9A-Za-z._-]{1,64}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AnomalyOut]:
    """Anomalies, newest first."""
    events = await platform.run(anomalies.list_visible, actor, kind=kind, gw=gw, limit=limit)
    return [AnomalyOut.model_validate(e.model_dump()) for e in events]


ROUTERS = (public, people, catalogue, goods, line, ledger, purchase, scans)
