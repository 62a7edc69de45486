"""The dashboard's management review pages: the list with what the minutes lack, and the minutes."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from qmsflow.context import QmsContext
from qmsflow.domain.management_review import Period
from qmsflow.services import accounts
from qmsflow.services import management_review as mr
from qmsflow.services.sync import sync_config
from qmsflow.store import UnitOfWork
from qmsflow.web.app import create_app


def test_reviews_list_and_minutes_pages(ctx: QmsContext, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    with UnitOfWork(ctx.db, "qmsflow") as uow:
        sync_config(uow, ctx.config, ctx.root)
        uow.commit()
    with UnitOfWork(ctx.db, "admin") as uow:
        accounts.add_user(uow, "ana", "ana", "viewer", "ana-password-123", must_change=False, password_set_by="ana")
    with UnitOfWork(ctx.db, "ana") as uow:
        review_id = mr.start(uow, ctx.config, Period.of(mr.today_in(ctx.config, uow.now()))).id
    with TestClient(create_app(ctx), base_url="http://testserver") as client:
        assert client.get("/management-reviews", follow_redirects=False).status_code in (302, 303)  # signed out
        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
        client.post("/login", data={"username": "ana", "password": "ana-password-123", "next": "/", "csrf": token})
        listing = client.get("/management-reviews")
        assert listing.status_code == 200 and review_id in listing.text
        minutes = client.get(f"/management-reviews/{review_id}")
        assert minutes.status_code == 200
        assert "no internal audit results recorded this quarter" in minutes.text and "not addressed" in minutes.text
        assert client.get("/management-reviews/MRV-1999-0001").status_code == 404
