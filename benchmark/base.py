"""`benchmark.base.MetaObs` / `MetaAction`: the names the wire protocol and the original guide's
snippets use. The classes are socket_bridge.wire_types' (this module only re-exports them);
the project's own code imports them from there.
"""

from socket_bridge.wire_types import MetaAction, MetaObs

__all__ = ["MetaAction", "MetaObs"]
