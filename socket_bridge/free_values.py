"""Which small values of an accepted pickle may change without changing how it decodes.

Real clients change a few small values on every request: ILStudio's sets
`timestep = np.array([[t]])` (8 bytes of array data), the guide's example `timestep=i` (an int).
The skeleton cache (skeleton_cache) lets the C unpickler decode a frame only when all of its
bytes outside the holes equal an accepted frame's, so without these holes every such request
took the checked pure-Python decoder.

`free_values` walks the opcodes of a frame the checked decoder accepted with a model of the
unpickler's stack and memo that tracks only *where each pushed value ends up*, and returns the
payload spans of the values that are

* the data of an array: a byte string used once, as item 4 of the (version, shape, dtype,
  fortran, data) state tuple BUILD gives an array made by `_reconstruct` or `numpy.empty`, or as
  the buffer numpy's protocol-5 `_frombuffer(buffer, dtype, shape, order)` reads; or
* a `timestep`: an int used once, as the value of the `timestep` key of the state dict BUILD
  gives a wire type (MetaObs / MetaAction).

Used once means the value, and the tuple or dict holding it, is pushed once (no memo GET of
it) and consumed once. In a frame with the same skeleton the opcodes are the same, so each such
value lands in the same place, and the checked decoder's handling there never reads it: array
data is checked by length only (the length prefix is skeleton), and a wire type's state values
are stored as they are. Its charges and its result differ only in that value. Any opcode the
model does not know (protocols 0-1, sets, extensions, out-of-band buffers) makes it return no
spans, which leaves the frame with the long byte-string holes alone, as before.
"""

from __future__ import annotations

from typing import Any

from socket_bridge.pickle_names import python3_name

_NUMPY = ("numpy.core.multiarray", "numpy._core.multiarray")
_ARRAY_FACTORIES = {*((path, "_reconstruct") for path in _NUMPY), ("numpy", "empty")}
_FROMBUFFER = {("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}
_WIRE_TYPES = {("benchmark.base", "MetaObs"), ("benchmark.base", "MetaAction")}
_RECONSTRUCTOR = ("copyreg", "_reconstructor")
FREE_FIELDS = frozenset({"timestep"})

# Payload offset from the opcode (after any length field) for the values that may be free.
_INT_PAYLOAD = {"BININT1": 1, "BININT2": 1, "BININT": 1, "LONG1": 2}
_BYTES_PAYLOAD = {"SHORT_BINBYTES": 2, "BINBYTES": 5, "BINBYTES8": 9, "BYTEARRAY8": 9}
_LEAVES = {"NONE", "NEWTRUE", "NEWFALSE", "BINFLOAT", "SHORT_BINUNICODE", "BINUNICODE",
           "BINUNICODE8", *_INT_PAYLOAD, *_BYTES_PAYLOAD}


class _Node:
    """A value on the modelled stack: what made it and every place it was consumed."""

    __slots__ = ("args", "func", "items", "kind", "pushes", "span", "uses", "value")

    def __init__(self, kind: str, value: Any = None, span: tuple[int, int] | None = None) -> None:
        self.kind, self.value, self.span = kind, value, span
        self.items: list[_Node] = []
        self.func: _Node | None = None
        self.args: _Node | None = None
        self.pushes = 1
        self.uses: list[tuple[str, _Node | None, Any]] = []  # (how, consumer, index or key)


class _Unsupported(Exception):
    """An opcode or stack shape this model does not follow."""


def free_values(ops: list[tuple[Any, Any, int]], raw: bytes) -> list[tuple[int, int]]:
    """The (start, end) payload spans of the free values in `raw` (see the module docstring),
    given its `pickletools.genops` list. [] when the model cannot follow the frame."""
    try:
        leaves = _run(ops, raw)
    except Exception:  # _Unsupported, or a stack this model does not follow: no free values
        return []
    return [leaf.span for leaf in leaves if leaf.span is not None and _is_free(leaf)]


def _run(ops: list[tuple[Any, Any, int]], raw: bytes) -> list[_Node]:
    stack: list[_Node] = []
    marks: list[int] = []
    memo: dict[int, _Node] = {}
    leaves: list[_Node] = []

    def pop_mark() -> list[_Node]:
        start = marks.pop()
        items = stack[start:]
        del stack[start:]
        return items

    def consume(node: _Node, how: str, consumer: _Node | None = None, at: Any = None) -> None:
        node.uses.append((how, consumer, at))

    for opcode, arg, pos in ops:
        name = opcode.name
        if name in _LEAVES:
            node = _Node("leaf", arg, _payload(name, arg, pos, raw))
            leaves.append(node)
            stack.append(node)
        elif name in ("PROTO", "FRAME"):
            continue
        elif name == "MARK":
            marks.append(len(stack))
        elif name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
            memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            node = memo[arg]
            node.pushes += 1
            stack.append(node)
        elif name in ("GLOBAL", "STACK_GLOBAL"):
            if name == "GLOBAL":
                module, qualname = arg.split(" ", 1)
            else:
                name_node, module_node = stack.pop(), stack.pop()
                consume(name_node, "global")
                consume(module_node, "global")
                module, qualname = module_node.value, name_node.value
            stack.append(_Node("global", python3_name(module, qualname)))
        elif name in ("EMPTY_TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "TUPLE"):
            count = {"EMPTY_TUPLE": 0, "TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}.get(name)
            items = pop_mark() if count is None else [stack.pop() for _ in range(count)][::-1]
            node = _Node("tuple")
            node.items = items
            for index, item in enumerate(items):
                consume(item, "item", node, index)
            stack.append(node)
        elif name in ("EMPTY_LIST", "EMPTY_DICT"):
            stack.append(_Node(name[6:].lower()))
        elif name in ("APPEND", "APPENDS"):
            items = [stack.pop()] if name == "APPEND" else pop_mark()
            for item in items:
                consume(item, "item", stack[-1])
        elif name in ("SETITEM", "SETITEMS"):
            items = stack[-2:] if name == "SETITEM" else pop_mark()
            if name == "SETITEM":
                del stack[-2:]
            if len(items) % 2:
                raise _Unsupported(name)
            target = stack[-1]
            for key, value in zip(items[::2], items[1::2], strict=True):
                consume(key, "key", target)
                consume(value, "value", target, key)
        elif name in ("REDUCE", "NEWOBJ"):
            args, func = stack.pop(), stack.pop()
            node = _Node("call")
            node.func, node.args = func, args
            consume(func, "func", node)
            consume(args, "args", node)
            stack.append(node)
        elif name == "BUILD":
            state = stack.pop()
            consume(state, "state", stack[-1])
        elif name == "STOP":
            consume(stack.pop(), "result")
        else:
            raise _Unsupported(name)
    return leaves


def _payload(name: str, arg: Any, pos: int, raw: bytes) -> tuple[int, int] | None:
    """Where the value of a possibly free opcode lies in the frame (after its length field)."""
    if name in _BYTES_PAYLOAD:
        start = pos + _BYTES_PAYLOAD[name]
        return start, start + len(arg)
    if name in _INT_PAYLOAD:
        start = pos + _INT_PAYLOAD[name]
        size = {"BININT1": 1, "BININT2": 2, "BININT": 4}.get(name)
        return start, start + (raw[pos + 1] if size is None else size)
    return None


def _only_use(node: _Node) -> tuple[str, _Node | None, Any] | None:
    return node.uses[0] if node.pushes == 1 and len(node.uses) == 1 else None


def _global(node: _Node | None) -> tuple[str, str] | None:
    return node.value if node is not None and node.kind == "global" else None


def _is_free(leaf: _Node) -> bool:
    use = _only_use(leaf)
    if use is None:
        return False
    how, holder, at = use
    if holder is None or _only_use(holder) is None:
        return False
    holder_how, consumer, _ = _only_use(holder)
    if consumer is None or consumer.kind != "call":
        return False
    if isinstance(leaf.value, (bytes, bytearray)):
        if how != "item" or holder.kind != "tuple":
            return False
        array_data = (at == 4 and len(holder.items) == 5 and holder_how == "state"
                      and _global(consumer.func) in _ARRAY_FACTORIES)
        buffer = at == 0 and holder_how == "args" and _global(consumer.func) in _FROMBUFFER
        return array_data or buffer
    return (type(leaf.value) is int and how == "value" and holder.kind == "dict"
            and holder_how == "state" and at.kind == "leaf" and at.value in FREE_FIELDS
            and _is_wire_instance(consumer))


def _is_wire_instance(call: _Node) -> bool:
    """A wire type's instance: NEWOBJ of the class, or copyreg._reconstructor(class, ...)."""
    made_by = _global(call.func)
    if made_by in _WIRE_TYPES:
        return True
    args = call.args
    return (made_by == _RECONSTRUCTOR and args is not None and args.kind == "tuple"
            and bool(args.items) and _global(args.items[0]) in _WIRE_TYPES)
