"""The product lifecycle and OEM links, as a property: random creations, stage moves, edits, deletions, links and
redemptions by every kind of account, with the clock moving.

After every step the platform's products equal a model kept by the test. Every refusal is the one the model
expects, says why (the lock and the way back, the stages it can move to, the link's state), and changes nothing in
any table of products, issued PIDs or links. No PID is issued twice, and each has its protocol's length.
`REBADGE_PROPERTY_PROFILE=long` runs many more examples.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from sqlalchemy import select

from cloud_bridge import accounts, oem, products
from cloud_bridge.accounts import SYSTEM, Actor, OrgKind, Role
from cloud_bridge.errors import CloudError, ConflictError, InvalidRequestError, NotFoundError, PermissionDeniedError
from cloud_bridge.platform import Platform
from cloud_bridge.products import (
    LOCKED_IN,
    NEXT_STAGES,
    PID_LENGTH,
    Changes,
    DataPoint,
    FirmwareKind,
    Part,
    Protocol,
    Service,
    Spec,
    Stage,
)
from cloud_bridge.store.schema import issued_pids, oem_links
from cloud_bridge.store.schema import products as product_table
from tests.test_cloud_helpers import T0

settings.register_profile(
    "ci", max_examples=25, stateful_step_count=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "long", max_examples=500, stateful_step_count=80, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
PROFILE_NAME = os.environ.get("REBADGE_PROPERTY_PROFILE", "ci")
TIMEOUT_S = 3 * 3600 if PROFILE_NAME == "long" else 120

MODEL_NOS = ["m1", "m2", "m3"]  # few, so owners collide on them
POINTS = [
    (),
    (DataPoint(id=1, code="switch", type="bool"),),
    (DataPoint(id=1, code="switch", type="bool"), DataPoint(id=2, code="bright", type="value")),
]
WHO = ["factory_admin", "technician", "customer", "customer2", "rival", "admin"]
LINK_VALID_S = 3600


@functools.cache
def _template() -> Path:
    """A migrated platform data dir made once, copied for every example."""
    path = Path(tempfile.mkdtemp(prefix="rebadge-products-template-"))
    asyncio.run(_open_close(path / "cloud"))
    return path


async def _open_close(path: Path) -> None:
    await (await Platform.open(path)).close()


@dataclass
class Product:
    """What the test expects of a stored product."""

    pid: str
    org: str
    spec: Spec
    stage: Stage = Stage.DEVELOPMENT
    managed_by: str | None = None


@dataclass
class Link:
    """What the test expects of an OEM link."""

    token: str
    pid: str
    expires_at: int
    used: bool = False
    services: frozenset[Service] = field(default_factory=frozenset)


class ProductsUnderUse(RuleBasedStateMachine):
    """Every account kind drives products and links; the model says what must happen."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="rebadge-products-"))
        shutil.copytree(_template() / "cloud", self.dir / "cloud")
        self.t = float(T0)
        self.platform: Platform = self._run(Platform.open(self.dir / "cloud", clock=lambda: self.t))
        self.actors: dict[str, Actor] = {}
        self.org_of: dict[str, str] = {}
        self.org_ids: dict[str, int] = {}
        self.products: dict[str, Product] = {}
        self.links: list[Link] = []
        self.ever_issued: list[str] = []

    def _run(self, coro: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self._run(self.platform.close())
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    async def _setup(self) -> None:
        now = self.platform.now()
        orgs = {"factory": OrgKind.FACTORY, "brand": OrgKind.BRAND, "brand2": OrgKind.BRAND, "rivals": OrgKind.FACTORY}
        for name, kind in orgs.items():
            self.org_ids[name] = await self.platform.run(accounts.create_org, SYSTEM, name, kind, now)
        people = {
            "factory_admin": ("factory", Role.FACTORY_ADMIN), "technician": ("factory", Role.TECHNICIAN),
            "customer": ("brand", Role.CUSTOMER), "customer2": ("brand2", Role.CUSTOMER),
            "rival": ("rivals", Role.FACTORY_ADMIN),
        }  # fmt: skip
        for who, (org, role) in people.items():
            account_id, _ = await self.platform.run(accounts.create_account, SYSTEM, self.org_ids[org], who, role, now)
            self.actors[who] = Actor(role, self.org_ids[org], account_id, who)
            self.org_of[who] = org
        self.actors["admin"] = SYSTEM
        self.org_of["admin"] = "platform"

    @initialize()
    def setup(self) -> None:
        self._run(self._setup())

    # -- helpers -------------------------------------------------------------------------------------------------

    async def _snapshot(self) -> tuple[list[Any], ...]:
        tables = []
        async with self.platform.engine.connect() as conn:
            for t in (product_table, issued_pids, oem_links):
                rows = await conn.execute(select(t).order_by(*t.primary_key.columns))
                tables.append([tuple(r) for r in rows.all()])
        return tuple(tables)

    def refused(self, op: Callable[[], Awaitable[Any]], kind: type[CloudError], *words: str) -> None:
        """`op` must fail with `kind`, its message holding `words`, and change nothing."""
        before = self._run(self._snapshot())
        with pytest.raises(kind) as caught:
            self._run(op())
        for w in words:
            assert w in str(caught.value), (w, str(caught.value))
        assert self._run(self._snapshot()) == before, f"a refusal changed something: {caught.value}"

    def _pick(self, pick: int) -> Product:
        # By creation order, never by PID: PIDs are random, so an order by PID would make the same steps pick
        # different products from one run to the next, and Hypothesis could not replay or shrink a failure.
        pids = list(self.products)
        return self.products[pids[pick % len(pids)]]

    def _may_change(self, who: str, p: Product) -> bool:
        if who == "admin":
            return True
        actor = self.actors[who]
        return actor.role in (Role.FACTORY_ADMIN, Role.CUSTOMER) and self.org_of[who] in (p.org, p.managed_by)

    def _model_taken(self, org: str, model_no: str, pid: str = "") -> bool:
        return any(q.org == org and q.spec.model_no == model_no and q.pid != pid for q in self.products.values())

    def _issued(self, pid: str, protocol: Protocol) -> None:
        assert pid not in self.ever_issued, f"PID {pid} issued twice"
        assert len(pid) == PID_LENGTH[protocol]
        self.ever_issued.append(pid)

    # -- rules ---------------------------------------------------------------------------------------------------

    @rule(
        who=st.sampled_from(["factory_admin", "factory_admin", "customer", "rival"]),
        model_no=st.sampled_from(MODEL_NOS),
        protocol=st.sampled_from(list(Protocol)),
        firmware=st.sampled_from([FirmwareKind.OEM, FirmwareKind.OEM, FirmwareKind.MCU, FirmwareKind.CUSTOM]),
        services=st.frozensets(st.sampled_from(list(Service)), max_size=3),
    )
    def create(self, who: str, model_no: str, protocol: Protocol, firmware: FirmwareKind, services: Any) -> None:
        spec = Spec(name="lamp", model_no=model_no, protocol=protocol, firmware=firmware, services=services)
        org = self.org_of[who]

        async def op() -> str:
            return await self.platform.run(products.create, self.actors[who], spec, self.platform.now())

        if self._model_taken(org, model_no):
            self.refused(op, ConflictError, f"model number {model_no!r} is already product")
            return
        pid = self._run(op())
        self._issued(pid, protocol)
        self.products[pid] = Product(pid, org, spec)

    @precondition(lambda self: self.products)
    @rule(pick=st.integers(0, 99), who=st.sampled_from(WHO), stage=st.sampled_from(list(Stage)))
    def move(self, pick: int, who: str, stage: Stage) -> None:
        p = self._pick(pick)

        async def op() -> Any:
            return await self.platform.run(products.set_stage, self.actors[who], p.pid, stage, self.platform.now())

        if who == "technician":
            self.refused(op, PermissionDeniedError, "may not do this")
        elif not self._may_change(who, p):
            self.refused(op, NotFoundError, "does not exist in your organisation")
        elif stage not in NEXT_STAGES[p.stage]:
            self.refused(op, ConflictError, f"is in {p.stage.value}; it can move to")
        else:
            assert self._run(op()).stage == stage
            p.stage = stage

    @precondition(lambda self: self.products)
    @rule(pick=st.integers(0, 99))
    def promote(self, pick: int) -> None:
        """The owner moves a product on towards mass production (the way to links, taken more often)."""
        p = self._pick(pick)
        forward = {Stage.DEVELOPMENT: Stage.TRIAL, Stage.TRIAL: Stage.MASS}
        if p.stage in forward:
            owner = {"factory": "factory_admin", "brand": "customer", "brand2": "customer2", "rivals": "rival"}
            self.move(pick, owner[p.org], forward[p.stage])

    @precondition(lambda self: self.products)
    @rule(
        pick=st.integers(0, 99),
        who=st.sampled_from(["factory_admin", "customer", "rival", "admin"]),
        part=st.sampled_from(list(Part)),
        choice=st.integers(0, 2),
    )
    def edit(self, pick: int, who: str, part: Part, choice: int) -> None:
        p = self._pick(pick)
        name = part.name.lower()
        value = self._value(part, choice)
        changes = Changes(**{name: value})
        new = replace(p.spec, **{name: value})

        async def op() -> Any:
            return await self.platform.run(products.edit, self.actors[who], p.pid, changes, self.platform.now())

        changed = value != getattr(p.spec, name)
        if not self._may_change(who, p):
            self.refused(op, NotFoundError, "does not exist in your organisation")
        elif changed and part in LOCKED_IN[p.stage]:
            why = products.lock_reason(p.stage, part)
            assert why is not None
            way_back = "move the product back to development" if p.stage is Stage.TRIAL else "create a new product"
            assert way_back in why
            self.refused(op, ConflictError, why)
        elif PID_LENGTH[new.protocol] != PID_LENGTH[p.spec.protocol]:
            self.refused(op, InvalidRequestError, f"needs {PID_LENGTH[new.protocol]}")
        elif self._model_taken(p.org, new.model_no, p.pid):
            self.refused(op, ConflictError, f"model number {new.model_no!r} is already product")
        else:
            row = self._run(op())
            p.spec = new
            assert products.spec_of(row) == new

    @staticmethod
    def _value(part: Part, choice: int) -> Any:
        values: dict[Part, list[Any]] = {
            Part.NAME: ["lamp", "lamp 2", "bulb"],
            Part.MODEL_NO: MODEL_NOS,
            Part.PROTOCOL: list(Protocol),
            Part.FIRMWARE: list(FirmwareKind),
            Part.FIRMWARE_VERSION: ["", "1.0.0", "2.1.0"],
            Part.DATA_POINTS: POINTS,
            Part.PANEL: ["", "panel-a", "panel-b"],
            Part.MODULE: ["", "WB3S", "CB2S"],
            Part.SERVICES: [frozenset(), frozenset({Service.OTA}), frozenset({Service.OTA, Service.VOICE_ALEXA})],
        }
        return values[part][choice]

    @precondition(lambda self: self.products)
    @rule(pick=st.integers(0, 99), who=st.sampled_from(["factory_admin", "customer", "rival"]))
    def delete(self, pick: int, who: str) -> None:
        p = self._pick(pick)

        async def op() -> None:
            await self.platform.run(products.remove, self.actors[who], p.pid, self.platform.now())

        if not self._may_change(who, p):
            self.refused(op, NotFoundError, "does not exist in your organisation")
        elif p.stage is not Stage.DEVELOPMENT:
            self.refused(op, ConflictError, "only a product in development can be deleted")
        elif any(link.pid == p.pid for link in self.links) or p.managed_by is not None:
            self.refused(op, ConflictError, "has OEM links and stays")
        else:
            self._run(op())
            del self.products[p.pid]

    @precondition(lambda self: self.products)
    @rule(pick=st.integers(0, 99), who=st.sampled_from(["factory_admin", "technician", "customer", "rival"]))
    def make_link(self, pick: int, who: str) -> None:
        p = self._pick(pick)

        async def op() -> tuple[str, int]:
            actor, now = self.actors[who], self.platform.now()
            return await self.platform.run(oem.create_link, actor, p.pid, now, valid_s=LINK_VALID_S)

        if self.actors[who].role != Role.FACTORY_ADMIN:
            self.refused(op, PermissionDeniedError, "may not do this")
        elif self.org_of[who] not in (p.org, p.managed_by):
            self.refused(op, NotFoundError, "does not exist in your organisation")
        elif self.org_of[who] != p.org:
            self.refused(op, PermissionDeniedError, "managed, not owned")
        elif p.stage is not Stage.MASS:
            self.refused(op, ConflictError, "an OEM link needs mass production")
        elif p.spec.firmware is not FirmwareKind.OEM:
            self.refused(op, ConflictError, "an OEM link needs the platform's own (oem) firmware")
        else:
            token, expires_at = self._run(op())
            assert expires_at == self.platform.now() + LINK_VALID_S
            self.links.append(Link(token, p.pid, expires_at, services=p.spec.services))

    @rule(model_no=st.sampled_from(MODEL_NOS), protocol=st.sampled_from(list(Protocol)))
    def factory_offers_a_link(self, model_no: str, protocol: Protocol) -> None:
        """The whole way to a link in one step, each part checked as the single rules check it."""
        services = frozenset({Service.OTA, Service.VOICE_ALEXA, Service.VOICE_GOOGLE})
        before = set(self.products)
        self.create("factory_admin", model_no, protocol, FirmwareKind.OEM, services)
        for new in [pid for pid in self.products if pid not in before]:
            pick = list(self.products).index(new)
            self.promote(pick)
            self.promote(pick)
            self.make_link(pick, "factory_admin")

    @precondition(lambda self: self.links)
    @rule(
        pick=st.integers(0, 99),
        who=st.sampled_from([*WHO, "customer", "customer2"]),
        model_no=st.sampled_from(MODEL_NOS),
        ask=st.none() | st.frozensets(st.sampled_from(list(Service)), max_size=2),
    )
    def redeem(self, pick: int, who: str, model_no: str, ask: frozenset[Service] | None) -> None:
        link = self.links[pick % len(self.links)]
        source = self.products[link.pid]
        choice = oem.Redemption("brand lamp", model_no, ask)

        async def op() -> str:
            return await self.platform.run(oem.redeem, self.actors[who], link.token, choice, self.platform.now())

        org = self.org_of[who]
        if org == source.org:
            self.refused(op, PermissionDeniedError, "made by your own organisation")
        elif self.actors[who].role != Role.CUSTOMER:
            self.refused(op, PermissionDeniedError, "only a customer account")
        elif link.used:
            self.refused(op, ConflictError, "this OEM link was used on")
        elif link.expires_at <= self.platform.now():
            self.refused(op, ConflictError, "this OEM link expired on")
        elif ask is not None and not ask <= link.services:
            self.refused(op, InvalidRequestError, "is not enabled on the factory's product")
        elif self._model_taken(org, model_no):
            self.refused(op, ConflictError, f"model number {model_no!r} is already product")
        else:
            pid = self._run(op())
            self._issued(pid, source.spec.protocol)
            link.used = True
            services = link.services if ask is None else ask
            spec = replace(source.spec, name="brand lamp", model_no=model_no, services=services)
            self.products[pid] = Product(pid, org, spec, Stage.MASS, managed_by=source.org)

    @rule(dt=st.sampled_from([1, 600, LINK_VALID_S]))
    def time_passes(self, dt: int) -> None:
        self.t += dt

    # -- what must hold after every step -------------------------------------------------------------------------

    @invariant()
    def store_matches_the_model(self) -> None:
        if not self.org_ids:
            return
        rows = self._run(self.platform.run(products.list_visible, SYSTEM))
        assert {r.pid for r in rows} == set(self.products)
        names = {v: k for k, v in self.org_ids.items()}
        for r in rows:
            p = self.products[r.pid]
            assert products.spec_of(r) == p.spec
            assert (Stage(r.stage), names[r.org_id]) == (p.stage, p.org)
            assert (names.get(r.managed_by) if r.managed_by else None) == p.managed_by
            assert r.data_owner == r.org_id  # a copy's finished-goods data is its customer's
        issued = self._run(self._snapshot())[1]
        assert sorted(i[0] for i in issued) == sorted(self.ever_issued)  # deleted products' PIDs stay issued


ProductsUnderUse.TestCase.settings = settings.get_profile(PROFILE_NAME)
test_products_under_use = pytest.mark.timeout(TIMEOUT_S)(ProductsUnderUse.TestCase)
