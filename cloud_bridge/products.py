"""Products: what a product is (PID, model number, protocol, firmware, data points, panel, module, services) and
its lifecycle development -> trial production -> mass production, with the fields each stage locks.

The platform issues every PID (never a caller); `issued_pids` keeps each one for good, so a deleted product's PID
is never issued again. A product made from an OEM link (`cloud_bridge/oem.py`) is managed by the factory that
issued the link as well as owned by its customer.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Row, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud_bridge.accounts import Actor, Role, get_org
from cloud_bridge.errors import ConflictError, InvalidRequestError, NotFoundError
from cloud_bridge.store.schema import certificates, issued_pids, oem_links, products
from wire.errors import MalformedError
from wire.ids import PID_ALPHABET, SHORT_PID_LEN, check_pid

log = logging.getLogger(__name__)

OWNER_ROLES = (Role.FACTORY_ADMIN, Role.CUSTOMER)
PID_ATTEMPTS = 8  # fresh PIDs drawn before giving up; a clash is already a one-in-10^12 event
MAX_DATA_POINTS = 255
MODEL_NO_MAX = 64
TEXT_LIMITS = {"name": 128, "model_no": MODEL_NO_MAX, "panel": 128, "module": 64, "firmware_version": 32}


class Stage(StrEnum):
    """Where a product is in its life; certificates need trial or mass production."""

    DEVELOPMENT = "development"
    TRIAL = "trial"
    MASS = "mass"


# Trial production can go back to development to change settings (as the purchase module allows); mass is final.
NEXT_STAGES = {Stage.DEVELOPMENT: {Stage.TRIAL}, Stage.TRIAL: {Stage.MASS, Stage.DEVELOPMENT}, Stage.MASS: set()}
PRODUCING = (Stage.TRIAL, Stage.MASS)
STAGE_NAMES = {Stage.DEVELOPMENT: "development", Stage.TRIAL: "trial production", Stage.MASS: "mass production"}


class Protocol(StrEnum):
    """The radio a product talks over; it fixes the length of the product's PID."""

    WIFI = "wifi"
    BLE = "ble"
    ZIGBEE = "zigbee"


PID_LENGTH = {Protocol.WIFI: 16, Protocol.BLE: SHORT_PID_LEN, Protocol.ZIGBEE: SHORT_PID_LEN}


class FirmwareKind(StrEnum):
    """Whose firmware the product runs."""

    OEM = "oem"  # the platform's own module firmware: the PID lives in the module
    MCU = "mcu"  # general module firmware with the product's own MCU, which holds the PID
    CUSTOM = "custom"  # firmware made for one customer


class Service(StrEnum):
    """The catalogue of services a product may have enabled."""

    OTA = "ota"  # firmware updates over the air
    CLOUD_TIMER = "cloud_timer"
    SCENES = "scenes"
    ENERGY_STATS = "energy_stats"
    VOICE_ALEXA = "voice_alexa"  # smart-speaker services
    VOICE_GOOGLE = "voice_google"
    VOICE_XIAODU = "voice_xiaodu"
    VOICE_TMALL_GENIE = "voice_tmall_genie"


SMART_SPEAKER_SERVICES = frozenset(s for s in Service if s.value.startswith("voice_"))


class DataPoint(BaseModel):
    """One data point of the product's data model (what the device reports and accepts)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int = Field(ge=1, le=255)
    code: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    type: Literal["bool", "value", "enum", "string", "raw", "bitmap"]
    mode: Literal["rw", "ro", "wo"] = "rw"


class Part(StrEnum):
    """The editable parts of a product, as refusals name them."""

    NAME = "name"
    MODEL_NO = "model number"
    PROTOCOL = "protocol"
    FIRMWARE = "firmware"
    FIRMWARE_VERSION = "firmware version"
    DATA_POINTS = "data points"
    PANEL = "panel"
    MODULE = "module"
    SERVICES = "services"


TRIAL_LOCKS = frozenset({Part.PROTOCOL, Part.FIRMWARE, Part.FIRMWARE_VERSION, Part.DATA_POINTS, Part.PANEL,
                               Part.MODULE})  # fmt: skip
LOCKED_IN = {Stage.DEVELOPMENT: frozenset[Part](), Stage.TRIAL: TRIAL_LOCKS, Stage.MASS: frozenset(Part)}


@dataclass(frozen=True)
class Spec:
    """What a product is, as its owner describes it (everything but the PID, which the platform issues)."""

    name: str
    model_no: str
    protocol: Protocol = Protocol.WIFI
    firmware: FirmwareKind = FirmwareKind.OEM
    firmware_version: str = ""
    data_points: tuple[DataPoint, ...] = ()
    panel: str = ""
    module: str = ""
    services: frozenset[Service] = frozenset()


@dataclass(frozen=True)
class Changes:
    """An edit: the fields to set (None: leave as is)."""

    name: str | None = None
    model_no: str | None = None
    protocol: Protocol | None = None
    firmware: FirmwareKind | None = None
    firmware_version: str | None = None
    data_points: tuple[DataPoint, ...] | None = None
    panel: str | None = None
    module: str | None = None
    services: frozenset[Service] | None = None


PART_OF_FIELD = {f.name: Part[f.name.upper()] for f in fields(Changes)}


def data_points_json(points: Sequence[DataPoint]) -> str:
    """The stored form of data points: canonical JSON, sorted by id."""
    return json.dumps([p.model_dump() for p in sorted(points, key=lambda p: p.id)], separators=(",", ":"))


def data_points_of(row: Row[Any]) -> tuple[DataPoint, ...]:
    """A stored product's data points."""
    return tuple(DataPoint.model_validate(p) for p in json.loads(row.data_points))


def services_of(row: Row[Any]) -> frozenset[Service]:
    """A stored product's enabled services."""
    return frozenset(Service(s) for s in row.services.split(",") if s)


def spec_of(row: Row[Any]) -> Spec:
    """What a stored product is."""
    return Spec(
        name=row.name, model_no=row.model_no, protocol=Protocol(row.protocol), firmware=FirmwareKind(row.firmware),
        firmware_version=row.firmware_version, data_points=data_points_of(row), panel=row.panel, module=row.module,
        services=services_of(row),
    )  # fmt: skip


def configuration(row: Row[Any]) -> dict[str, Any]:
    """The product's configuration as plain JSON-able data (for order snapshots and the console)."""
    spec = spec_of(row)
    return {
        "pid": row.pid, "stage": row.stage, "model_no": spec.model_no, "protocol": spec.protocol.value,
        "firmware": spec.firmware.value, "firmware_version": spec.firmware_version,
        "data_points": [p.model_dump() for p in spec.data_points], "panel": spec.panel, "module": spec.module,
        "services": sorted(s.value for s in spec.services),
    }  # fmt: skip


def firmware_of(row: Row[Any]) -> FirmwareKind:
    """The firmware kind of a stored product."""
    return FirmwareKind(row.firmware)


def may_manage(org_id: int | None, row: Row[Any]) -> bool:
    """Whether organisation `org_id` owns the product or manages it for its owner (an OEM link's factory)."""
    return org_id is not None and org_id in (row.org_id, row.managed_by)


async def managed_by(conn: AsyncConnection, pid: str) -> int | None:
    """The factory organisation managing the product for its owner, or None (its owner manages it alone)."""
    row = (await conn.execute(select(products.c.managed_by).where(products.c.pid == pid))).first()
    return None if row is None or row.managed_by is None else int(row.managed_by)


def _check_text(field: str, value: str, *, required: bool) -> None:
    limit = TEXT_LIMITS[field]
    if len(value) > limit or (required and not value.strip()):
        least = 1 if required else 0
        raise InvalidRequestError(f"{field} {value!r} must be {least} to {limit} characters", field=field)


def _check_spec(spec: Spec) -> None:
    _check_text("name", spec.name, required=True)
    _check_text("model_no", spec.model_no, required=True)
    for field in ("panel", "module", "firmware_version"):
        _check_text(field, getattr(spec, field), required=False)
    if len(spec.data_points) > MAX_DATA_POINTS:
        raise InvalidRequestError(f"a product has at most {MAX_DATA_POINTS} data points", field="data_points")
    for attr in ("id", "code"):
        seen = [getattr(p, attr) for p in spec.data_points]
        if twice := sorted({v for v in seen if seen.count(v) > 1}):
            raise InvalidRequestError(
                f"data point {attr} {twice[0]!r} is used twice; each is unique", field="data_points"
            )


def _owner_of(actor: Actor, org_id: int | None) -> int:
    if actor.role == Role.ADMIN and org_id is not None:
        return org_id
    if actor.org_id is None or actor.role == Role.ADMIN:
        raise InvalidRequestError("an admin must name the organisation that owns the product", field="org_id")
    return actor.org_id


async def _issue_pid(conn: AsyncConnection, protocol: Protocol, owner: int, now: int) -> str:
    """A PID never issued before, recorded as issued in the same transaction."""
    for _ in range(PID_ATTEMPTS):
        pid = "".join(secrets.choice(PID_ALPHABET) for _ in range(PID_LENGTH[protocol]))
        check_pid(pid)
        try:
            async with conn.begin_nested():
                await conn.execute(issued_pids.insert().values(pid=pid, org_id=owner, issued_at=now))
        except IntegrityError:
            log.warning("drawn PID %s was issued before; drawing another", pid)
            continue
        return pid
    raise ConflictError(f"no fresh {protocol.value} PID found in {PID_ATTEMPTS} draws; try again")


async def _insert(
    conn: AsyncConnection, pid: str, owner: int, spec: Spec, stage: Stage, now: int, **extra: Any
) -> None:
    await _check_model_free(conn, owner, spec.model_no, pid)
    await conn.execute(
        products.insert().values(
            pid=pid, org_id=owner, name=spec.name, stage=stage.value, created_at=now, updated_at=now,
            model_no=spec.model_no, protocol=spec.protocol.value, firmware=spec.firmware.value,
            firmware_version=spec.firmware_version, data_points=data_points_json(spec.data_points),
            panel=spec.panel, module=spec.module, services=",".join(sorted(spec.services)),
            data_owner=extra.pop("data_owner", owner), **extra,
        )
    )  # fmt: skip


async def _check_model_free(conn: AsyncConnection, owner: int, model_no: str, pid: str) -> None:
    query = select(products.c.pid).where(products.c.org_id == owner, products.c.model_no == model_no)
    taken = (await conn.execute(query.where(products.c.pid != pid))).first()
    if taken is not None:
        raise ConflictError(
            f"model number {model_no!r} is already product {taken.pid} of your organisation; choose another"
        )


async def create(conn: AsyncConnection, actor: Actor, spec: Spec, now: int, *, org_id: int | None = None) -> str:
    """Create a product in development, owned by the actor's organisation (admins name it); return its new PID."""
    actor.require(Role.ADMIN, *OWNER_ROLES)
    owner = _owner_of(actor, org_id)
    await get_org(conn, owner)
    _check_spec(spec)
    pid = await _issue_pid(conn, spec.protocol, owner, now)
    await _insert(conn, pid, owner, spec, Stage.DEVELOPMENT, now)
    log.info("product %s (%s, model %s) created for organisation %d", pid, spec.name, spec.model_no, owner)
    return pid


async def create_copy(
    conn: AsyncConnection, source: Row[Any], owner: int, spec: Spec, now: int, *, managed_by: int, data_owner: int
) -> str:
    """A new product for `owner` configured as `source` (an OEM link's redemption), in `source`'s stage."""
    _check_spec(spec)
    pid = await _issue_pid(conn, spec.protocol, owner, now)
    extra = {"managed_by": managed_by, "source_pid": source.pid, "data_owner": data_owner}
    await _insert(conn, pid, owner, spec, Stage(source.stage), now, **extra)
    log.info("product %s created for organisation %d from %s, managed by %d", pid, owner, source.pid, managed_by)
    return pid


async def create_with_pid(conn: AsyncConnection, pid: str, owner: int, spec: Spec, now: int) -> None:
    """Register a product under a PID its goods carry already: for the seed (demo, tests, benchmarks) only; the
    API and the CLI never call it. A PID ever issued is refused, as everywhere."""
    try:
        check_pid(pid)
    except MalformedError as exc:
        raise InvalidRequestError(str(exc), field="pid") from exc
    if len(pid) != PID_LENGTH[spec.protocol]:
        raise InvalidRequestError(
            f"a {spec.protocol.value} PID has {PID_LENGTH[spec.protocol]} characters", field="pid"
        )
    _check_spec(spec)
    try:
        async with conn.begin_nested():
            await conn.execute(issued_pids.insert().values(pid=pid, org_id=owner, issued_at=now))
    except IntegrityError as exc:
        raise ConflictError(f"PID {pid} was issued before; a PID is never issued twice") from exc
    await _insert(conn, pid, owner, spec, Stage.DEVELOPMENT, now)


async def stored(conn: AsyncConnection, pid: str) -> Row[Any]:
    """The stored product, whoever asks (for the platform's own checks); NotFoundError names the PID."""
    row = (await conn.execute(select(products).where(products.c.pid == pid))).first()
    if row is None:
        raise NotFoundError(f"product {pid!r} does not exist", what="product", key=pid)
    return row


async def get(conn: AsyncConnection, actor: Actor, pid: str) -> Row[Any]:
    """A product the actor may see; NotFoundError otherwise (other organisations' products are not revealed)."""
    row = (await conn.execute(select(products).where(products.c.pid == pid))).first()
    hidden = row is not None and actor.role == Role.BUYER and Stage(row.stage) not in PRODUCING
    if row is None or hidden or not (actor.platform_staff or may_manage(actor.org_id, row)):
        raise NotFoundError(f"product {pid!r} does not exist in your organisation", what="product", key=pid)
    return row


def may_change(actor: Actor, row: Row[Any]) -> bool:
    """Whether the actor may edit, move or delete the product: an admin, or its owner's or managing factory's admins."""
    return actor.role == Role.ADMIN or (actor.role in OWNER_ROLES and may_manage(actor.org_id, row))


async def _changeable(conn: AsyncConnection, actor: Actor, pid: str) -> Row[Any]:
    """The product, locked for update, if the actor may change it (its owner, its managing factory, an admin)."""
    actor.require(Role.ADMIN, *OWNER_ROLES)
    row = (await conn.execute(select(products).where(products.c.pid == pid).with_for_update())).first()
    if row is None or not may_change(actor, row):
        raise NotFoundError(f"product {pid!r} does not exist in your organisation", what="product", key=pid)
    return row


async def set_stage(conn: AsyncConnection, actor: Actor, pid: str, stage: Stage, now: int) -> Row[Any]:
    """Move a product to its next stage: development -> trial (completing development), trial -> mass or back."""
    row = await _changeable(conn, actor, pid)
    current = Stage(row.stage)
    if stage not in NEXT_STAGES[current]:
        nexts = ", ".join(sorted(s.value for s in NEXT_STAGES[current])) or "none (mass production is final)"
        raise ConflictError(f"product {pid} is in {current.value}; it can move to: {nexts}")
    done = await conn.execute(
        update(products)
        .where(products.c.pid == pid, products.c.stage == current.value)
        .values(stage=stage.value, updated_at=now)
    )
    if done.rowcount != 1:  # another request moved it meanwhile
        raise ConflictError(f"product {pid} changed stage meanwhile; reload it and try again")
    log.info("product %s: %s -> %s", pid, current.value, stage.value)
    return await get(conn, actor, pid)


async def complete_development(conn: AsyncConnection, actor: Actor, pid: str, now: int) -> Row[Any]:
    """Development -> trial production: data points, panel, module and firmware are locked from now on."""
    return await set_stage(conn, actor, pid, Stage.TRIAL, now)


def lock_reason(stage: Stage, part: Part) -> str | None:
    """Why `part` cannot change in `stage`, and the way back; None when it can."""
    if part not in LOCKED_IN[stage]:
        return None
    verb = "are" if part in (Part.DATA_POINTS, Part.SERVICES) else "is"
    them = "them" if verb == "are" else "it"
    if stage is Stage.MASS:
        return f"{part.value} {verb} locked in mass production, which is final; create a new product to change {them}"
    return f"{part.value} {verb} locked in {STAGE_NAMES[stage]}; move the product back to development to change {them}"


def _apply(pid: str, spec: Spec, changes: Changes, stage: Stage) -> Spec:
    """The spec after `changes`; ConflictError for the first locked field it would change."""
    new = spec
    for field in fields(Changes):
        value = getattr(changes, field.name)
        if value is None or value == getattr(spec, field.name):
            continue
        part = PART_OF_FIELD[field.name]
        if (why := lock_reason(stage, part)) is not None:
            raise ConflictError(f"product {pid}: {why}")
        new = replace(new, **{field.name: value})
    if PID_LENGTH[new.protocol] != PID_LENGTH[spec.protocol]:
        raise InvalidRequestError(
            f"product {pid} is {spec.protocol.value} with a {len(pid)}-character PID; protocol {new.protocol.value} "
            f"needs {PID_LENGTH[new.protocol]}: create a new product instead",
            field="protocol",
        )
    return new


async def edit(conn: AsyncConnection, actor: Actor, pid: str, changes: Changes, now: int) -> Row[Any]:
    """Change a product's fields; a field its stage locks is refused with the way back, and nothing changes."""
    row = await _changeable(conn, actor, pid)
    spec = _apply(pid, spec_of(row), changes, Stage(row.stage))
    _check_spec(spec)
    await _check_model_free(conn, int(row.org_id), spec.model_no, pid)
    await conn.execute(
        update(products)
        .where(products.c.pid == pid)
        .values(
            name=spec.name, model_no=spec.model_no, protocol=spec.protocol.value, firmware=spec.firmware.value,
            firmware_version=spec.firmware_version, data_points=data_points_json(spec.data_points),
            panel=spec.panel, module=spec.module, services=",".join(sorted(spec.services)), updated_at=now,
        )
    )  # fmt: skip
    log.info("product %s edited by %s", pid, actor.name)
    return await get(conn, actor, pid)


async def remove(conn: AsyncConnection, actor: Actor, pid: str, now: int) -> None:
    """Delete a product in development that nothing refers to; its PID stays issued (never given out again)."""
    row = await _changeable(conn, actor, pid)
    if row.stage != Stage.DEVELOPMENT:
        raise ConflictError(
            f"product {pid} is in {STAGE_NAMES[Stage(row.stage)]}; only a product in development can be deleted"
        )
    named = or_(certificates.c.original_pid == pid, certificates.c.new_pid == pid)
    if (await conn.execute(select(certificates.c.cert_no).where(named).limit(1))).first() is not None:
        raise ConflictError(f"product {pid} is named by a certificate and stays, for the audit trail")
    linked = or_(oem_links.c.pid == pid, oem_links.c.new_pid == pid)
    if (await conn.execute(select(oem_links.c.id).where(linked).limit(1))).first() is not None:
        raise ConflictError(f"product {pid} has OEM links and stays, for the audit trail")
    try:
        async with conn.begin_nested():
            await conn.execute(delete(products).where(products.c.pid == pid))
    except IntegrityError as exc:  # e.g. an order names it
        raise ConflictError(f"product {pid} is referred to (by an order or a grant) and stays") from exc
    await conn.execute(update(issued_pids).where(issued_pids.c.pid == pid).values(deleted_at=now))
    log.info("product %s deleted by %s; its PID stays issued", pid, actor.name)


async def list_visible(conn: AsyncConnection, actor: Actor) -> list[Row[Any]]:
    """Products the actor may see (its own and those it manages); buyers see only those in trial or mass."""
    query = select(products).order_by(products.c.pid)
    if not actor.platform_staff:
        query = query.where(or_(products.c.org_id == actor.org_id, products.c.managed_by == actor.org_id))
    if actor.role == Role.BUYER:
        query = query.where(products.c.stage.in_([s.value for s in PRODUCING]))
    return list((await conn.execute(query)).all())


def parse_data_points(raw: Sequence[Mapping[str, Any]], field: str = "data_points") -> tuple[DataPoint, ...]:
    """Data points from plain data (the CLI's JSON); InvalidRequestError names the first bad one."""
    try:
        return tuple(DataPoint.model_validate(p) for p in raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise InvalidRequestError(f"data point field {where}: {first.get('msg')}", field=field) from exc
