"""What every console page shares: the layout and its navigation, refusals rendered as the API words them, and
`ConsolePage`, the unit a page module hands to `install_console` (its router and its navigation items)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from cloud_bridge.accounts import Role
from cloud_bridge.api.app import STATUS_OF
from cloud_bridge.api.validation import detail_of, field_of
from cloud_bridge.console.auth import CSRF_FIELD
from cloud_bridge.errors import CloudError, InvalidRequestError
from cloud_bridge.logins import Session
from wire.errors import MalformedError
from wire.ids import IdKind
from wire.times import utc_iso
from wire.topics import RESULT_WORDS

PREFIX = "/console"
HERE = Path(__file__).parent
# Autoescaping is on for .html: an SN, a comment or a name with markup is shown as text.
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["when"] = lambda at: utc_iso(at) if at else ""
templates.env.globals["result_words"] = RESULT_WORDS


@dataclass(frozen=True)
class NavItem:
    """A page in the navigation, shown to these roles (the store functions behind the page still decide)."""

    label: str
    path: str
    roles: frozenset[Role]


@dataclass(frozen=True)
class ConsolePage:
    """One page module: its routes (under PREFIX) and its items in the navigation, in order."""

    router: APIRouter
    nav: tuple[NavItem, ...] = ()


def page_router() -> APIRouter:
    """A page module's router: under the console's prefix, out of the API's OpenAPI."""
    return APIRouter(prefix=PREFIX, include_in_schema=False)


def nav_of(request: Request, session: Session | None) -> list[NavItem]:
    """The navigation items the session's role may use."""
    if session is None:
        return []
    items: tuple[NavItem, ...] = request.app.state.console_nav
    return [item for item in items if session.actor.role in item.roles]


def render(request: Request, name: str, session: Session | None, *, status: int = 200, **context: Any) -> HTMLResponse:
    """A page inside the layout, with the navigation the session's role may use."""
    return templates.TemplateResponse(
        request, name, {"session": session, "nav": nav_of(request, session), "prefix": PREFIX,
                        "csrf_field": CSRF_FIELD, **context},
        status_code=status,
    )  # fmt: skip


def refused(request: Request, session: Session, exc: CloudError, title: str) -> HTMLResponse:
    """A page the role may not see, or whose data the store refused: the API's sentence and status."""
    return render(request, "refused.html", session, status=status_of(exc), error=str(exc), title=title)


def see_other(path: str) -> RedirectResponse:
    """After a POST that worked: the page again by GET."""
    return RedirectResponse(PREFIX + path, status_code=303)


def status_of(exc: CloudError) -> int:
    """The HTTP status the API gives this refusal."""
    return next((code for cls, code in STATUS_OF if isinstance(exc, cls)), 400)


def refusal_of(exc: ValidationError) -> str:
    """The API's sentence for a form that its body model refuses."""
    first = exc.errors()[0]
    return detail_of(first, field_of(tuple(first.get("loc", ()))))


async def acting(
    request: Request, page: str, action: Callable[[], Awaitable[Any]], session: Session, **context: Any
) -> Any:
    """Run `action`; a refusal renders `page` with the API's message and status instead of a result."""
    try:
        return await action()
    except ValidationError as exc:
        return render(request, page, session, status=422, error=refusal_of(exc), **context)
    except CloudError as exc:
        return render(request, page, session, status=status_of(exc), error=str(exc), **context)


def form_dict(form: Mapping[str, Any]) -> dict[str, str]:
    """The text fields of a form, the CSRF token left out."""
    return {k: v for k, v in form.items() if isinstance(v, str) and k != CSRF_FIELD}


def path_id(kind: IdKind, value: str, field: str) -> str:
    """A path's ID checked as the API's path types check it."""
    try:
        return kind.check(value, field)
    except MalformedError as exc:
        raise InvalidRequestError(str(exc), field=field) from exc
