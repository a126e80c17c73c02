"""Waiting on an in-process agent's state, for the tests that run one (the agent, the demo bot)."""

from __future__ import annotations

from scheduledbot.agent import Agent
from scheduledbot.protocol import BotState, StateDoc


async def until(agent: Agent, state: BotState) -> StateDoc:
    """The agent's document once it reaches `state` (fails if it ends elsewhere); wakes on each change only."""
    doc = agent.state.doc
    while doc.state != state:
        assert not doc.terminal, f"ended as {doc.state} ({doc.reason}: {doc.message}), not {state}"
        doc = await agent.state.wait_after(doc.version, None)
    return doc
