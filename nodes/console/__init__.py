"""The site console served by a node for its registry staff (see :mod:`nodes.console.app`)."""

from nodes.console.app import ConsoleServer, create_console
from nodes.console.auth import add_user, users_path

__all__ = ["ConsoleServer", "add_user", "create_console", "users_path"]
