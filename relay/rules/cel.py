"""CEL (Common Expression Language) conditions of derived-event rules, compiled and type-checked once.

The implementation is `cel-expr-python`, Google's Python binding of the C++ CEL runtime (cel-cpp): it
type-checks an expression against declared variables at compile time (an unknown variable, a wrong
operand type or a syntax error is refused when the configuration loads), evaluates in native code, and
follows the CEL specification's semantics (heterogeneous number comparison, errors as values).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from cel_expr_python import cel

__all__ = ["CelError", "Condition", "compile_condition"]


class CelError(ValueError):
    """An expression that does not parse, does not type-check, or is not a condition (bool)."""


def _environment() -> Any:
    t = cel.Type
    json_map = t.Map(t.STRING, t.DYN)
    # data: the event's `data` object; event: the whole canonical payload; channel and key of the event.
    return cel.NewEnv(variables={"data": json_map, "event": json_map, "channel": t.STRING, "key": t.STRING})


_ENV = _environment()


class Condition:
    """A compiled CEL condition; `holds` evaluates it over one event."""

    def __init__(self, text: str, program: Any) -> None:
        self.text = text
        self._program = program

    def holds(self, variables: Mapping[str, Any]) -> bool | None:
        """True or False; None when the expression could not be evaluated for this event (a missing field)."""
        try:
            result = self._program.eval(data=dict(variables))
        except RuntimeError:
            return None
        value = result.value()
        return value if isinstance(value, bool) else None


def _first_line(message: str) -> str:
    text = message.removeprefix("INVALID_ARGUMENT: ").removeprefix("ERROR: ")
    return text.splitlines()[0].strip() if text else "invalid expression"


@lru_cache(maxsize=1024)
def compile_condition(text: str) -> Condition:
    """Compile and type-check `text` against `data`, `event` (maps), `channel` and `key` (strings).

    Raises:
        CelError: a syntax or type error, or an expression whose type is not bool (or dynamic).
    """
    if not text.strip():
        raise CelError("the expression is empty")
    try:
        program = _ENV.compile(text)
    except RuntimeError as exc:
        raise CelError(_first_line(str(exc))) from None
    kind = program.return_type().name()
    if kind not in ("bool", "BOOL", "dyn", "DYN"):
        raise CelError(f"the expression gives a {kind.lower()}, not a condition (true or false)")
    return Condition(text, program)
