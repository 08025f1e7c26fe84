"""The wire types under the names ILStudio clients use: `benchmark.base` (a re-export of
socket_bridge.wire_types; the module path is part of the pickle protocol)."""
