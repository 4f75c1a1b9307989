"""The order state machine: states, the actions that move an order, and who may take each (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from cloud_bridge.accounts import Role


class OrderState(StrEnum):
    """Where an order is; `cancelled` and `completed` are final."""

    INTENTION = "intention"  # submitted; waits for the price and the software version
    CONFIRMED = "confirmed"  # price and software version confirmed
    CONTRACTED = "contracted"  # the contract is signed
    PAID = "paid"  # a deposit or the full price received
    IN_PRODUCTION = "in_production"
    SHIPPED = "shipped"  # batch numbers and logistics recorded
    TEST_DATA = "test_data"  # the units' rebadge records may be downloaded
    INVOICED = "invoiced"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class OrderAction(StrEnum):
    """What someone does to an order after submitting it."""

    CONFIRM_PRICE = "confirm_price"
    CONFIRM_SOFTWARE = "confirm_software"
    SIGN_CONTRACT = "sign_contract"
    PAY = "pay"
    START_PRODUCTION = "start_production"
    SHIP = "ship"
    LINK_CERTIFICATE = "link_certificate"
    PUBLISH_TEST_DATA = "publish_test_data"
    INVOICE = "invoice"
    COMPLETE = "complete"
    CANCEL = "cancel"


class Party(StrEnum):
    """Who takes an action: the ordering side or one of the platform's managers."""

    ORDERER = "orderer"  # an account of the ordering organisation holding a grant for the order's product
    ORG_ADMIN = "org_admin"  # a factory admin of the ordering organisation (it applied for the certificate)
    BUSINESS_MANAGER = "business_manager"
    PROJECT_MANAGER = "project_manager"


MANAGER_OF = {Role.BUSINESS_MANAGER: Party.BUSINESS_MANAGER, Role.PROJECT_MANAGER: Party.PROJECT_MANAGER}


@dataclass(frozen=True)
class Step:
    """An action: the states it may start from, where it leads (None: stays), and who may take it."""

    from_states: frozenset[OrderState]
    to_state: OrderState | None
    parties: frozenset[Party]


S = OrderState
BEFORE_PRODUCTION = frozenset({S.INTENTION, S.CONFIRMED, S.CONTRACTED, S.PAID})
# A balance after a deposit may come any time before the invoice.
OWING = frozenset({S.CONTRACTED, S.PAID, S.IN_PRODUCTION, S.SHIPPED, S.TEST_DATA})
FINAL = frozenset({S.COMPLETED, S.CANCELLED})
# States in which an order's test data may be downloaded.
TEST_DATA_OPEN = frozenset({S.TEST_DATA, S.INVOICED, S.COMPLETED})


def _step(from_states: set[OrderState] | frozenset[OrderState], to: OrderState | None, *who: Party) -> Step:
    return Step(frozenset(from_states), to, frozenset(who))


STEPS: dict[OrderAction, Step] = {
    # Both confirmations happen in `intention`, in either order; the second moves the order to `confirmed`.
    OrderAction.CONFIRM_PRICE: _step({S.INTENTION}, None, Party.BUSINESS_MANAGER),
    OrderAction.CONFIRM_SOFTWARE: _step({S.INTENTION}, None, Party.PROJECT_MANAGER),
    OrderAction.SIGN_CONTRACT: _step({S.CONFIRMED}, S.CONTRACTED, Party.BUSINESS_MANAGER),
    # A first payment moves a contracted order to `paid`; a balance after a deposit keeps the state.
    OrderAction.PAY: _step(OWING, None, Party.BUSINESS_MANAGER),
    OrderAction.START_PRODUCTION: _step({S.PAID}, S.IN_PRODUCTION, Party.PROJECT_MANAGER),
    OrderAction.SHIP: _step({S.IN_PRODUCTION}, S.SHIPPED, Party.PROJECT_MANAGER),
    OrderAction.LINK_CERTIFICATE: _step(BEFORE_PRODUCTION | {S.IN_PRODUCTION, S.SHIPPED}, None, Party.ORG_ADMIN),
    OrderAction.PUBLISH_TEST_DATA: _step({S.SHIPPED}, S.TEST_DATA, Party.PROJECT_MANAGER),
    OrderAction.INVOICE: _step({S.SHIPPED, S.TEST_DATA}, S.INVOICED, Party.BUSINESS_MANAGER),
    OrderAction.COMPLETE: _step({S.INVOICED}, S.COMPLETED, Party.ORDERER),
    OrderAction.CANCEL: _step(BEFORE_PRODUCTION, S.CANCELLED, Party.ORDERER, Party.BUSINESS_MANAGER),
}


def actions_from(state: OrderState) -> list[OrderAction]:
    """The actions whose table allows them from `state` (their own conditions may still refuse)."""
    return [action for action, step in STEPS.items() if state in step.from_states]


def describe(actions: list[OrderAction]) -> str:
    """`action (who or who), ...` for a refusal; `none (final)` when nothing is left."""
    if not actions:
        return "none (the order is final)"
    return ", ".join(f"{a.value} ({' or '.join(sorted(p.value for p in STEPS[a].parties))})" for a in actions)
