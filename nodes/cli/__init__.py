"""The node's commands: ``varde node``, ``varde policy``, ``varde audit``, ``varde synth``.

:mod:`launcher.cli` puts them under the one ``varde`` command. ``synth`` is a
node command because only node code makes rows (synthetic ones, for the demo
and tests); it is registered at the top level as ``varde synth``.
"""

from nodes.cli.audit import audit_app
from nodes.cli.data import data_app
from nodes.cli.init import setup_app
from nodes.cli.keys import keys_app
from nodes.cli.policy import policy_app
from nodes.cli.run import node_app
from nodes.cli.staff import node_admin

node_app.registered_commands += node_admin.registered_commands  # approve/deny/pending/console-user
node_app.registered_commands += setup_app.registered_commands  # init/doctor
node_app.registered_commands += data_app.registered_commands  # check-data
node_app.registered_commands += keys_app.registered_commands  # rotate-key
synth_command = next(c for c in node_app.registered_commands if c.name == "synth")
node_app.registered_commands.remove(synth_command)

__all__ = ["audit_app", "node_admin", "node_app", "policy_app", "synth_command"]
