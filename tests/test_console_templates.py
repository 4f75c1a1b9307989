"""Every form the console's templates post carries its CSRF token: the session's, or the login form's own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cloud_bridge.console.rendering import HERE

TEMPLATES = sorted((HERE / "templates").glob("*.html"))
POST_FORM = re.compile(r'<form\b[^>]*method="post"[^>]*action="\{\{ prefix \}\}([^"]*)"[^>]*>(.*?)</form>', re.S)


def test_the_templates_post_forms() -> None:
    assert sum(len(POST_FORM.findall(t.read_text())) for t in TEMPLATES) >= 10


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.name)
def test_each_post_form_carries_its_csrf_token(template: Path) -> None:
    for action, body in POST_FORM.findall(template.read_text()):
        token = "login_csrf" if action == "/login" else "session.csrf"
        wanted = f'<input type="hidden" name="{{{{ csrf_field }}}}" value="{{{{ {token} }}}}">'
        assert wanted in body, f"{template.name}: the form posting to {action} carries no {token}"
