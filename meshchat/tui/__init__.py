"""The interfaces over the public API: a prompt_toolkit terminal app, or plain line mode.

``run_interface`` picks one: the terminal app when asked for (stdin and stdout are terminals
and no ``--no-tui``) and prompt_toolkit is installed; line mode with readline completion on a
terminal without prompt_toolkit; plain line mode otherwise.
"""

from __future__ import annotations

import asyncio

from meshchat.tui.api import NodeAPI
from meshchat.tui.session import StartOptions

__all__ = ["StartOptions", "have_prompt_toolkit", "run_interface"]


def have_prompt_toolkit() -> bool:
    try:
        import prompt_toolkit  # noqa: F401
    except ImportError:
        return False
    return True


async def run_interface(
    node: NodeAPI,
    options: StartOptions,
    *,
    terminal: bool,
    stop: asyncio.Event | None = None,
) -> None:
    """Run one interactive session on a started node until /quit, end of input or ``stop``."""
    if terminal and have_prompt_toolkit():
        from meshchat.tui.app import run_app

        await run_app(node, options, stop=stop)
        return
    from meshchat.tui.linemode import run_linemode

    await run_linemode(node, options, stop=stop, use_readline=terminal)
