"""Products and OEM links: create (the platform issues the PID), read, edit, delete, stage, links and redemption.

Each endpoint runs one function of `cloud_bridge/products.py` or `cloud_bridge/oem.py`, which checks the caller.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from pydantic import Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from cloud_bridge import oem, products
from cloud_bridge.api.deps import ActorDep, PlatformDep
from cloud_bridge.api.models import Body, Out, Problem
from cloud_bridge.products import MAX_DATA_POINTS, DataPoint, FirmwareKind, Protocol, Service, Stage
from wire.ids import Pid

ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": Problem} for code in (401, 403, 404, 409, 413, 422)}
PidPath = Annotated[Pid, Path()]
PID_NOT_ACCEPTED = (
    "pid is not accepted: the platform issues each product's PID when it creates the product; "
    "leave pid out and read it from the answer"
)

catalogue = APIRouter(tags=["products and certificates"], responses=ERRORS)

ModelNo = Annotated[str, Field(min_length=1, max_length=products.MODEL_NO_MAX, description="Unique per owner.")]
Name = Annotated[str, Field(min_length=1, max_length=128)]
Panel = Annotated[str, Field(max_length=128)]
Module = Annotated[str, Field(max_length=64)]
FirmwareVersion = Annotated[str, Field(max_length=32)]
DataPoints = Annotated[list[DataPoint], Field(max_length=MAX_DATA_POINTS)]
Services = Annotated[list[Service], Field(max_length=len(Service))]


class ProductIn(Body):
    name: Name
    model_no: ModelNo
    protocol: Protocol = Field(default=Protocol.WIFI, description="wifi: a 16-character PID; ble, zigbee: 8.")
    firmware: FirmwareKind = FirmwareKind.OEM
    firmware_version: FirmwareVersion = ""
    data_points: DataPoints = Field(default_factory=list)
    panel: Panel = ""
    module: Module = ""
    services: Services = Field(default_factory=list)
    org_id: int | None = Field(default=None, ge=1, le=2**31 - 1, description="Admins only: the owner.")
    pid: SkipJsonSchema[str | None] = None  # refused with a message that says why, instead of "extra field"

    @field_validator("pid", mode="before")
    @classmethod
    def _no_pid(cls, value: object) -> None:
        if value is not None:
            raise ValueError(PID_NOT_ACCEPTED)

    def spec(self) -> products.Spec:
        """The product this body describes."""
        return products.Spec(
            name=self.name, model_no=self.model_no, protocol=self.protocol, firmware=self.firmware,
            firmware_version=self.firmware_version, data_points=tuple(self.data_points), panel=self.panel,
            module=self.module, services=frozenset(self.services),
        )  # fmt: skip


class ProductEdit(Body):
    """The fields to change; those left out stay as they are."""

    name: Name | None = None
    model_no: ModelNo | None = None
    protocol: Protocol | None = None
    firmware: FirmwareKind | None = None
    firmware_version: FirmwareVersion | None = None
    data_points: DataPoints | None = None
    panel: Panel | None = None
    module: Module | None = None
    services: Services | None = None

    def changes(self) -> products.Changes:
        """The edit this body asks for."""
        return products.Changes(
            name=self.name, model_no=self.model_no, protocol=self.protocol, firmware=self.firmware,
            firmware_version=self.firmware_version,
            data_points=None if self.data_points is None else tuple(self.data_points), panel=self.panel,
            module=self.module, services=None if self.services is None else frozenset(self.services),
        )  # fmt: skip


class StageIn(Body):
    stage: Stage


class ProductOut(Out):
    pid: str
    org_id: int
    name: str
    stage: Stage
    model_no: str
    protocol: Protocol
    firmware: FirmwareKind
    firmware_version: str
    data_points: list[DataPoint]
    panel: str
    module: str
    services: list[Service]
    data_owner: int = Field(description="The organisation the finished goods' data belongs to.")
    managed_by: int | None = Field(description="The factory managing this product for its owner (OEM link).")
    source_pid: str | None = Field(description="The factory's product this one was copied from (OEM link).")
    created_at: int
    updated_at: int


class OemLinkIn(Body):
    valid_days: int = Field(default=oem.DEFAULT_VALID_S // 86400, ge=1, le=oem.MAX_VALID_S // 86400)


class OemLinkCreated(Out):
    pid: str
    token: str = Field(description="The link's secret: shown this once, the platform keeps only its hash.")
    expires_at: int


class OemLinkOut(Out):
    id: int
    pid: str
    created_at: int
    expires_at: int
    used_at: int | None
    new_pid: str | None = Field(description="The customer's product the link made, once redeemed.")


class RedeemIn(Body):
    token: str = Field(min_length=1, max_length=128)
    name: Name
    model_no: ModelNo
    services: Services | None = Field(
        default=None, description="Which of the factory product's services to enable; omit for all of them."
    )


def product_out(row: Any) -> ProductOut:
    """A stored product as the API shows it."""
    fields = dict(row._mapping) | products.configuration(row)
    return ProductOut.model_validate(fields)


@catalogue.post("/products", status_code=201)
async def create_product(body: ProductIn, actor: ActorDep, platform: PlatformDep) -> ProductOut:
    """Create a product in development; the platform issues its PID (16 characters for Wi-Fi, 8 for BLE, Zigbee)."""
    pid = await platform.run(products.create, actor, body.spec(), platform.now(), org_id=body.org_id)
    return product_out(await platform.run(products.get, actor, pid))


@catalogue.get("/products")
async def list_products(actor: ActorDep, platform: PlatformDep) -> list[ProductOut]:
    """Your organisation's products and those it manages (buyers: those in trial or mass production)."""
    return [product_out(r) for r in await platform.run(products.list_visible, actor)]


@catalogue.get("/products/{pid}")
async def get_product(pid: PidPath, actor: ActorDep, platform: PlatformDep) -> ProductOut:
    """One product."""
    return product_out(await platform.run(products.get, actor, pid))


@catalogue.patch("/products/{pid}")
async def edit_product(pid: PidPath, body: ProductEdit, actor: ActorDep, platform: PlatformDep) -> ProductOut:
    """Change fields; trial production locks data points, panel, module and firmware, mass production all."""
    return product_out(await platform.run(products.edit, actor, pid, body.changes(), platform.now()))


@catalogue.delete("/products/{pid}", status_code=204)
async def delete_product(pid: PidPath, actor: ActorDep, platform: PlatformDep) -> Response:
    """Delete a product in development that nothing names; its PID is never issued again."""
    await platform.run(products.remove, actor, pid, platform.now())
    return Response(status_code=204)


@catalogue.post("/products/{pid}/stage")
async def set_stage(pid: PidPath, body: StageIn, actor: ActorDep, platform: PlatformDep) -> ProductOut:
    """Move a product along development -> trial (completing development) -> mass production, or trial back."""
    return product_out(await platform.run(products.set_stage, actor, pid, body.stage, platform.now()))


@catalogue.post("/products/{pid}/oem-links", status_code=201)
async def create_oem_link(pid: PidPath, body: OemLinkIn, actor: ActorDep, platform: PlatformDep) -> OemLinkCreated:
    """A one-time, expiring OEM link to a product in mass production on oem firmware (its factory's admins)."""
    token, expires_at = await platform.run(oem.create_link, actor, pid, platform.now(), valid_s=body.valid_days * 86400)
    return OemLinkCreated(pid=pid, token=token, expires_at=expires_at)


@catalogue.get("/products/{pid}/oem-links")
async def list_oem_links(pid: PidPath, actor: ActorDep, platform: PlatformDep) -> list[OemLinkOut]:
    """The product's OEM links and what became of them (never their tokens)."""
    return [OemLinkOut.model_validate(dict(r._mapping)) for r in await platform.run(oem.links_of, actor, pid)]


@catalogue.post("/oem-links/redeem", status_code=201)
async def redeem_oem_link(body: RedeemIn, actor: ActorDep, platform: PlatformDep) -> ProductOut:
    """A customer redeems an OEM link: a new product of theirs, configured as the factory's and managed by it."""
    choice = oem.Redemption(body.name, body.model_no, None if body.services is None else tuple(body.services))
    pid = await platform.run(oem.redeem, actor, body.token, choice, platform.now())
    return product_out(await platform.run(products.get, actor, pid))
