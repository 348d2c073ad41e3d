"""Request-scoped dependencies shared by every domain."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.kit.crypto import SecretBox
from app.kit.db import Inbox, unit_of_work


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's one transaction: committed if the endpoint returns, else rolled back."""
    async with unit_of_work(request.app.state.sessionmaker) as session:
        yield session


# Plain `async def`: a sync dependency would be run in a worker thread, a thread hand-off
# on every request for reading an attribute.
async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_inbox(request: Request) -> Inbox:
    """Where the webhooks keep receipts (`app.kit.db.Inbox`)."""
    inbox: Inbox = request.app.state.inbox
    return inbox


async def get_sessionmaker(request: Request) -> async_sessionmaker[AsyncSession]:
    """For a dependency that needs the database only sometimes (a cache miss): it opens its
    own short transaction, and the requests that don't need one pay nothing."""
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    return sessionmaker


async def get_secret_box(request: Request) -> SecretBox:
    box: SecretBox = request.app.state.secret_box
    return box


# scope="function": commit before the response is sent, so a failed commit is never a 2xx.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]
SecretBoxDep = Annotated[SecretBox, Depends(get_secret_box)]
InboxDep = Annotated[Inbox, Depends(get_inbox)]
SessionmakerDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessionmaker)]
