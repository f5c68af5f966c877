"""The HTTP routes of CONTRACT.md, one module per resource. Each: authenticate, validate, call, shape."""

from __future__ import annotations

from fastapi import APIRouter

from agentstream.web.models import Health
from agentstream.web.routes import agents, chat, conversations, keys, openai, runs, ui

__all__ = ["router"]

router = APIRouter()


@router.get("/healthz", response_model=None, responses={200: {"model": Health}})
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


for module in (agents, chat, ui, conversations, keys, runs):
    router.include_router(module.router, prefix="/api/v1")
router.include_router(openai.router)
