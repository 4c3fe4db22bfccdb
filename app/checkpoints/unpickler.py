"""A pickle interpreter that can only build data: the stdlib parses the opcodes, this runs a safe subset.

Why not ``torch.load(weights_only=True)``: its unpickler allows calls that allocate without filling
(``torch.Tensor(n)``, ``bytearray(n)``), codecs of any cost (``_codecs.encode(s, "punycode")``),
exotic tensor kinds, and trusts a persistent-load that hands out storages larger than their records; its
extra allow-list is process-wide state that loads must take turns on; and it cannot read the
FRAME/MEMOIZE/STACK_GLOBAL opcodes of protocols 4 and 5. Here every callable is one the caller passes in
``globals_`` (a name -> guard mapping, see ``pickle_globals``), every storage comes from the caller's
``persistent_load``, and nothing is shared between loads.

``pickletools.genops`` only decodes opcodes and their arguments; it never imports or calls anything.
"""

from __future__ import annotations

import pickletools
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any, TypeVar

from app.errors import UnreadableCheckpoint, UnsafeCheckpoint

# Generous for any real checkpoint (one object per tensor, name and shape entry), and a bound on the
# memory a pickle of up to max_pickle_bytes can make us allocate.
MAX_OBJECTS = 5_000_000
# Keys whose hashes a file cannot make collide (str/bytes hashes are salted; small ints are distinct).
_MAX_INT_KEY = 2**61 - 2
_TEXT_OPCODES = frozenset(
    {"INT", "LONG", "STRING", "UNICODE", "FLOAT", "PERSID", "GET", "PUT", "INST", "OBJ", "LIST", "DICT"}
)
_DICT_TYPES = (dict, OrderedDict, Counter)
_F = TypeVar("_F", bound=Callable[..., Any])


_NO_FROZENSET = (
    "The checkpoint holds a frozenset, which torch.load(weights_only=True) cannot read back from the full "
    "checkpoint; store a set or a list."
)


class BoundedReader:
    """A file view that never reads past ``end`` and never asks for more than is there.

    pickletools reads a declared length in one call; a lying length must not turn into a huge
    allocation before the short read is noticed.
    """

    def __init__(self, handle: IO[bytes], end: int) -> None:
        self._handle = handle
        self._end = end

    def read(self, size: int = -1) -> bytes:
        left = max(0, self._end - self._handle.tell())
        return self._handle.read(left if size < 0 else min(size, left))

    def readline(self, size: int = -1) -> bytes:
        left = max(0, self._end - self._handle.tell())
        return self._handle.readline(min(left, 4096) if size < 0 else min(size, left, 4096))

    def tell(self) -> int:
        return self._handle.tell()


def unpickle(
    stream: IO[bytes] | BoundedReader,
    *,
    globals_: Mapping[str, object],
    persistent_load: Callable[[Any], Any] | None = None,
    also_refused: Iterable[str] = (),
) -> Any:
    """Run one pickle from ``stream`` (which is left just after its STOP opcode).

    Of the objects ``globals_`` names, REDUCE calls only functions marked ``pickle_callable``, NEWOBJ
    creates only classes marked ``pickle_newable`` (and BUILD sets state only on their instances);
    anything else a global stands for is an inert value.
    """
    return _Machine(globals_, persistent_load, sorted(also_refused)).run(stream)


def pickle_callable(func: _F) -> _F:
    """Let a pickle call ``func`` by REDUCE (it must check its own arguments)."""
    func._pickle_callable = True  # type: ignore[attr-defined]
    return func


def refused_globals(data: bytes, allowed: Mapping[str, object]) -> list[str]:
    """Names a pickle imports that ``allowed`` lacks, found by parsing alone: the full list for the
    error message. Only the run decides; this may miss a name whose text came through the memo."""
    found: set[str] = set()
    strings: list[str] = []
    memo: dict[int, str | None] = {}
    top: str | None = None
    try:
        for opcode, arg, _pos in pickletools.genops(data):
            name = opcode.name
            if name == "GLOBAL" and isinstance(arg, str):
                module, _, attribute = arg.partition(" ")
                found.add(_qualified(module, attribute))
            elif name == "STACK_GLOBAL" and len(strings) >= 2:
                found.add(_qualified(strings[-2], strings[-1]))
            if name in ("MEMOIZE", "BINPUT", "LONG_BINPUT"):
                memo[len(memo) if name == "MEMOIZE" else int(arg or 0)] = top
                continue
            if name in ("FRAME", "PROTO"):
                continue
            top = arg if isinstance(arg, str) and ("UNICODE" in name or "STRING" in name) else None
            if name in ("BINGET", "LONG_BINGET"):
                top = memo.get(int(arg or 0))
            if top is not None:
                strings.append(top)
    except Exception:
        pass  # malformed pickles are reported by the run itself
    return sorted(name for name in found if name not in allowed)


def _qualified(module: str, name: str) -> str:
    if (module, name) in NAME_MAPPING:
        module, name = NAME_MAPPING[(module, name)]
    elif module in IMPORT_MAPPING:
        module = IMPORT_MAPPING[module]
    return f"{module}.{name}"


def _describe(obj: object) -> str:
    """A global's name for a message: markers carry theirs, functions and classes have a qualname."""
    name = getattr(obj, "name", None) if not callable(obj) else None
    if isinstance(name, str):
        return name
    module = getattr(obj, "__module__", "")
    qualname = getattr(obj, "__qualname__", type(obj).__name__)
    return f"{module}.{qualname}" if module else str(qualname)


def check_text(value: str) -> str:
    """Strings must be valid Unicode text: a lone surrogate cannot be stored, logged or sent as JSON."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UnreadableCheckpoint(
            f"The checkpoint's pickle holds a string that is not valid Unicode text ({value[:40]!r}); "
            "re-save it from Python with ordinary strings."
        ) from None
    return value


def check_key(key: object) -> object:
    if key is None or isinstance(key, str | bytes | bool):
        return key
    if type(key) is int and -_MAX_INT_KEY <= key <= _MAX_INT_KEY:
        return key
    raise UnreadableCheckpoint(
        f"The checkpoint's pickle uses the {type(key).__name__} {str(key)[:40]} as a dict key or set member; "
        "checkpoints keep str keys, and int keys below 2**61."
    )


class _Machine:
    def __init__(
        self,
        globals_: Mapping[str, object],
        persistent_load: Callable[[Any], Any] | None,
        also_refused: list[str],
    ) -> None:
        self.also_refused = also_refused
        self.globals = globals_
        self.persistent_load = persistent_load
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.objects = 0

    def run(self, stream: IO[bytes] | BoundedReader) -> Any:
        try:
            return self._run(pickletools.genops(stream))  # type: ignore[arg-type]
        except (UnreadableCheckpoint, UnsafeCheckpoint):
            raise
        except RecursionError:
            raise UnreadableCheckpoint("The checkpoint's pickle is nested too deeply.") from None
        except MemoryError:
            raise UnreadableCheckpoint(
                "The checkpoint's pickle asks for more memory than it holds."
            ) from None
        except Exception as exc:
            # A broken stream (truncated, unknown opcode, stack underflow, missing memo, wrong types).
            raise UnreadableCheckpoint(
                f"The checkpoint's pickle is malformed: {type(exc).__name__}: {str(exc)[:200]}"
            ) from None

    def _push(self, value: Any) -> None:
        self.objects += 1
        if self.objects > MAX_OBJECTS:
            raise UnreadableCheckpoint(
                f"The checkpoint's pickle builds more than {MAX_OBJECTS} objects; that is not a model checkpoint."
            )
        self.stack.append(value)

    def _pop_mark(self) -> list[Any]:
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def _resolve(self, module: str, name: str) -> object:
        full = _qualified(check_text(module), check_text(name))
        found = self.globals.get(full)
        if found is None:
            names = sorted({full, *self.also_refused})
            raise UnsafeCheckpoint(
                f"The checkpoint needs {', '.join(names)}, which is not allow-listed; nothing of it was run. "
                "Save model.state_dict() instead of the whole model, or register its class as an architecture "
                "(docs/architectures.md, section 3).",
                {"globals": names},
            )
        return found

    def _call(self, func: Any, args: Any) -> Any:
        if not getattr(func, "_pickle_callable", False) or not isinstance(args, tuple):
            name = _describe(func)
            raise UnsafeCheckpoint(
                f"The checkpoint's pickle calls {name}, which it may not call (it would allocate or run "
                "something the file does not hold); nothing was run. Save tensors with torch.save.",
                {"globals": [name]},
            )
        return func(*args)

    def _run(self, ops: Iterator[tuple[pickletools.OpcodeInfo, Any, int | None]]) -> Any:
        for opcode, arg, _pos in ops:
            name = opcode.name
            handler = getattr(self, f"op_{name}", None)
            if handler is not None:
                handler(arg)
            elif name == "STOP":
                return self.stack.pop()
            elif name in ("PROTO", "FRAME"):
                continue
            elif name in _TEXT_OPCODES:
                raise UnreadableCheckpoint(
                    f"The checkpoint's pickle uses the text opcode {name} (protocol 0/1); "
                    "save it with torch.save's default protocol."
                )
            else:
                raise UnreadableCheckpoint(
                    f"The checkpoint's pickle uses the opcode {name}, which is not supported."
                )
        raise UnreadableCheckpoint("The checkpoint's pickle ends without its STOP opcode (truncated).")

    # -- constants
    def op_NONE(self, _arg: None) -> None:
        self._push(None)

    def op_NEWTRUE(self, _arg: None) -> None:
        self._push(True)

    def op_NEWFALSE(self, _arg: None) -> None:
        self._push(False)

    def _push_value(self, arg: Any) -> None:
        self._push(check_text(arg) if isinstance(arg, str) else arg)

    op_BININT = op_BININT1 = op_BININT2 = op_LONG1 = op_BINFLOAT = _push_value

    def op_LONG4(self, _arg: int) -> None:
        # Integers of 256 bytes and more: torch.load(weights_only=True) cannot read them back from the
        # full checkpoint we would write, so they are refused here, where the reason is clear.
        raise UnreadableCheckpoint(
            "The checkpoint holds an integer of more than 2,000 bits; torch.load(weights_only=True) cannot "
            "read one back. Store it as a string."
        )

    op_BINUNICODE = op_SHORT_BINUNICODE = op_BINUNICODE8 = _push_value
    op_BINBYTES = op_SHORT_BINBYTES = op_BINBYTES8 = _push_value

    def op_BINSTRING(self, arg: str) -> None:
        # Python 2's str: protocol-2 files from Python 2 hold names and keys this way.
        self._push(check_text(arg))

    op_SHORT_BINSTRING = op_BINSTRING

    def op_BYTEARRAY8(self, arg: bytes) -> None:
        self._push(bytearray(arg))

    # -- containers
    def op_MARK(self, _arg: None) -> None:
        self.metastack.append(self.stack)
        self.stack = []

    def op_EMPTY_TUPLE(self, _arg: None) -> None:
        self._push(())

    def op_EMPTY_LIST(self, _arg: None) -> None:
        self._push([])

    def op_EMPTY_DICT(self, _arg: None) -> None:
        self._push({})

    def op_EMPTY_SET(self, _arg: None) -> None:
        self._push(set())

    def op_TUPLE(self, _arg: None) -> None:
        self._push(tuple(self._pop_mark()))

    def op_TUPLE1(self, _arg: None) -> None:
        self.stack[-1] = (self.stack[-1],)

    def op_TUPLE2(self, _arg: None) -> None:
        self.stack[-2:] = [(self.stack[-2], self.stack[-1])]

    def op_TUPLE3(self, _arg: None) -> None:
        self.stack[-3:] = [(self.stack[-3], self.stack[-2], self.stack[-1])]

    def op_FROZENSET(self, _arg: None) -> None:
        raise UnreadableCheckpoint(_NO_FROZENSET)

    def op_APPEND(self, _arg: None) -> None:
        item = self.stack.pop()
        self._list_target().append(item)

    def op_APPENDS(self, _arg: None) -> None:
        items = self._pop_mark()
        self._list_target().extend(items)

    def _list_target(self) -> list[Any]:
        target = self.stack[-1]
        if type(target) is not list:
            raise UnreadableCheckpoint(f"The checkpoint's pickle appends to a {type(target).__name__}.")
        return target

    def op_SETITEM(self, _arg: None) -> None:
        value, key = self.stack.pop(), self.stack.pop()
        self._dict_target()[check_key(key)] = value

    def op_SETITEMS(self, _arg: None) -> None:
        items = self._pop_mark()
        if len(items) % 2:
            raise UnreadableCheckpoint("The checkpoint's pickle sets a dict item without a value.")
        target = self._dict_target()
        for index in range(0, len(items), 2):
            target[check_key(items[index])] = items[index + 1]

    def _dict_target(self) -> dict[Any, Any]:
        target = self.stack[-1]
        if type(target) not in _DICT_TYPES:
            raise UnreadableCheckpoint(f"The checkpoint's pickle sets items on a {type(target).__name__}.")
        return target  # type: ignore[no-any-return]

    def op_ADDITEMS(self, _arg: None) -> None:
        items = self._pop_mark()
        target = self.stack[-1]
        if type(target) is not set:
            raise UnreadableCheckpoint(
                f"The checkpoint's pickle adds set items to a {type(target).__name__}."
            )
        target.update(check_key(item) for item in items)

    # -- stack and memo
    def op_POP(self, _arg: None) -> None:
        self.stack.pop()

    def op_POP_MARK(self, _arg: None) -> None:
        self._pop_mark()

    def op_DUP(self, _arg: None) -> None:
        self._push(self.stack[-1])

    def op_BINPUT(self, index: int) -> None:
        self.memo[index] = self.stack[-1]

    op_LONG_BINPUT = op_BINPUT

    def op_MEMOIZE(self, _arg: None) -> None:
        self.memo[len(self.memo)] = self.stack[-1]

    def op_BINGET(self, index: int) -> None:
        if index not in self.memo:
            raise UnreadableCheckpoint(
                f"The checkpoint's pickle refers to memo entry {index}, which it never set."
            )
        self._push(self.memo[index])

    op_LONG_BINGET = op_BINGET

    # -- the only ways to reach code: each goes through ``globals_``
    def op_GLOBAL(self, arg: str) -> None:
        module, _, name = arg.partition(" ")
        self._push(self._resolve(module, name))

    def op_STACK_GLOBAL(self, _arg: None) -> None:
        name, module = self.stack.pop(), self.stack.pop()
        if not isinstance(module, str) or not isinstance(name, str):
            raise UnreadableCheckpoint(
                "The checkpoint's pickle names a global with something other than text."
            )
        self._push(self._resolve(module, name))

    def op_REDUCE(self, _arg: None) -> None:
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], args)

    def op_NEWOBJ(self, _arg: None) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        if (
            not isinstance(cls, type)
            or not cls.__dict__.get("_pickle_newable", False)
            or not isinstance(args, tuple)
        ):
            name = _describe(cls)
            raise UnsafeCheckpoint(
                f"The checkpoint's pickle creates a {name} object, which it may not create; nothing was run.",
                {"globals": [name]},
            )
        self._push(cls.__new__(cls, *args))

    def op_NEWOBJ_EX(self, _arg: None) -> None:
        kwargs = self.stack.pop()
        if kwargs:
            raise UnreadableCheckpoint("The checkpoint's pickle creates an object with keyword arguments.")
        self.op_NEWOBJ(None)

    def op_BUILD(self, _arg: None) -> None:
        state = self.stack.pop()
        target = self.stack[-1]
        if type(target) is OrderedDict and isinstance(state, dict):
            # A state_dict's ``_metadata`` (per-module versions) arrives this way.
            for key in state:
                if not isinstance(key, str):
                    raise UnreadableCheckpoint("The checkpoint's pickle sets a non-text attribute.")
            target.__dict__.update(state)
        elif type(target).__dict__.get("_pickle_newable", False):
            target.__setstate__(state)
        else:
            raise UnsafeCheckpoint(
                f"The checkpoint's pickle sets the state of a {type(target).__name__}, which it may not; "
                "nothing was run.",
                {"globals": []},
            )

    def op_BINPERSID(self, _arg: None) -> None:
        pid = self.stack.pop()
        if self.persistent_load is None:
            raise UnreadableCheckpoint("The pickle refers to external data where none may be.")
        self._push(self.persistent_load(pid))
