"""Bags on disk, through the `rosbags` library (rosbag2's sqlite3 and MCAP storage, no ROS
install needed): opening with clear errors, the message types, writing, and header stamps
rewritten in serialized bytes.
"""

from __future__ import annotations

import os
import struct
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from rosbags.highlevel import AnyReader
from rosbags.interfaces import Connection, Nodetype
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
ACTION_CHUNK = "policy_server_ros/msg/ActionChunk"
_HEADER = ("header", (Nodetype.NAME, "std_msgs/msg/Header"))


class BagError(RuntimeError):
    """A bag that cannot be read or written; the message names the bag and what is wrong."""


def find_msg_definition(msgtype: str) -> str | None:
    """The .msg text of `pkg/msg/Name` from an installed package: this environment, then the
    AMENT_PREFIX_PATH of a sourced ROS install; this checkout's msg/ for its own types."""
    package, _, name = msgtype.split("/")
    prefixes = [Path(sys.prefix)]
    prefixes += [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    candidates = [prefix / "share" / package / "msg" / f"{name}.msg" for prefix in prefixes]
    if package == "policy_server_ros":
        candidates.append(Path(__file__).resolve().parents[2] / "msg" / f"{name}.msg")
    for path in candidates:
        if path.is_file():
            return path.read_text()
    return None


def typestore() -> Typestore:
    """ROS 2 Kilted's standard types plus ActionChunk."""
    store = get_typestore(Stores.ROS2_KILTED)
    ensure_type(store, ACTION_CHUNK)
    return store


def ensure_type(store: Typestore, msgtype: str) -> bool:
    """Register `msgtype` from its installed .msg file unless known; False if not found."""
    if msgtype in store.fielddefs:
        return True
    text = find_msg_definition(msgtype)
    if text is None:
        return False
    store.register(get_types_from_msg(text, msgtype))
    return True


def has_header(store: Typestore, msgtype: str) -> bool:
    """Whether the type's first field is a std_msgs/Header (so its stamp sits at a fixed
    offset of the serialized message)."""
    fields = store.fielddefs.get(msgtype)
    return bool(fields and fields[1] and fields[1][0] == _HEADER)


def restamp(raw: bytes | bytearray | memoryview, stamp_ns: int) -> bytearray:
    """A copy of a CDR-serialized message whose first field is a Header, with header.stamp set
    to `stamp_ns`. CDR: a 4-byte encapsulation header (byte 1 = 1 for little-endian), then
    int32 sec and uint32 nanosec, naturally aligned at offsets 4 and 8. No decode/encode."""
    out = bytearray(raw)
    if len(out) < 12:
        raise ValueError(f"message of {len(out)} bytes is too short to hold a header stamp")
    order = "<" if out[1] & 1 else ">"
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    struct.pack_into(order + "iI", out, 4, sec, nanosec)
    return out


def header_stamp_ns(raw: bytes | bytearray | memoryview) -> int:
    """header.stamp of a CDR-serialized message whose first field is a Header."""
    order = "<" if raw[1] & 1 else ">"
    sec, nanosec = struct.unpack_from(order + "iI", raw, 4)
    return sec * 1_000_000_000 + nanosec


@contextmanager
def open_bag(path: Path) -> Iterator[AnyReader]:
    """An open reader with the bag's own message types (plus ActionChunk); BagError if the bag
    is missing, truncated or corrupt."""
    path = Path(path)
    if not path.exists():
        raise BagError(f"bag {path} does not exist")
    try:
        reader = AnyReader([path], default_typestore=typestore())
        reader.open()
    except Exception as exc:  # rosbags raises several types; all mean "unreadable"
        raise BagError(f"cannot read bag {path}: {exc} (missing metadata.yaml, truncated or "
                       f"corrupt storage file?)") from exc
    try:
        yield reader
    finally:
        reader.close()


def read_messages(reader: AnyReader, connections: Sequence[Connection],
                  start_ns: int | None = None, stop_ns: int | None = None,
                  ) -> Iterator[tuple[Connection, int, bytes]]:
    """(connection, log time ns, raw bytes) in log-time order; BagError on a damaged bag."""
    count = 0
    try:
        for item in reader.messages(connections=connections, start=start_ns, stop=stop_ns):
            count += 1
            yield item
    except (GeneratorExit, KeyboardInterrupt):
        raise
    except Exception as exc:
        path = reader.paths[0] if getattr(reader, "paths", None) else "?"
        raise BagError(f"bag {path} is damaged after {count} messages: {exc}") from exc


def select_connections(reader: AnyReader, topics: Sequence[str] | None) -> list[Connection]:
    """The bag's connections on `topics` (all when None); BagError naming unknown topics."""
    if not topics:
        return list(reader.connections)
    available = sorted({c.topic for c in reader.connections})
    unknown = [t for t in topics if t not in available]
    if unknown:
        raise BagError(f"topics {unknown} are not in the bag; it has: {', '.join(available)}")
    return [c for c in reader.connections if c.topic in topics]


def new_writer(path: Path, storage: str) -> Writer:
    """An open rosbag2 writer (version 9) with `storage` (mcap or sqlite3)."""
    path = Path(path)
    if path.exists():
        raise BagError(f"{path} exists; choose a new output path")
    if storage not in STORAGES:
        raise BagError(f"unknown storage {storage!r}; choose one of {list(STORAGES)}")
    writer = Writer(path, version=9, storage_plugin=STORAGES[storage])
    try:
        writer.open()
    except Exception as exc:
        raise BagError(f"cannot create bag {path}: {exc}") from exc
    return writer
