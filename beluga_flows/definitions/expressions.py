"""CEL expressions behind one small interface: compile once, evaluate over bound values.

A definition's ``conditions``, ``input_mapping``, ``output_mapping``, ``for_each`` and
``loop_condition`` are `CEL <https://cel.dev>`_ (the Common Expression Language of
Kubernetes, Envoy and Google Cloud): a side-effect-free, non-Turing-complete language
with no attribute access to host objects, no imports and no loops beyond bounded
macros over the given lists. Expressions are compiled when a definition is
validated and evaluated with values *bound as variables*: no value is ever pasted
into expression text, so a customer named ``"); drop table`` is just a string.

The implementation is the ``common-expression-language`` package (a Rust core, the
``cel`` module); nothing else in beluga_flows imports it. An expression names the
variables it reads (:attr:`Expression.names`), so an evaluation converts only those
values, not the whole of ``data``.

Example::

    >>> expr = compile_expression("amount > limit && customer.tier == 'gold'")
    >>> expr.evaluate({"amount": 12, "limit": 10, "customer": {"tier": "gold"}})
    True
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cel

__all__ = ["MAX_LENGTH", "Expression", "ExpressionError", "compile_expression", "identifiers"]

MAX_LENGTH = 4096  # an expression longer than this is a program, not a condition
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# CEL's reserved words cannot be variable names (a data key "in" is still data["in"]).
_RESERVED = frozenset(
    [
        "true",
        "false",
        "null",
        "in",
        "as",
        "break",
        "const",
        "continue",
        "else",
        "for",
        "function",
        "if",
        "import",
        "let",
        "loop",
        "package",
        "namespace",
        "return",
        "var",
        "void",
        "while",
    ]
)


class ExpressionError(ValueError):
    """An expression that does not compile, or failed to evaluate."""


@dataclass(frozen=True)
class Expression:
    """A compiled CEL expression and the variable names it reads."""

    source: str
    program: Any = field(repr=False, compare=False)
    names: frozenset[str] = field(compare=False)

    def evaluate(self, scope: Mapping[str, Any]) -> Any:
        """The expression's value with ``scope``'s entries bound as variables (only
        those it names are converted); ``ExpressionError`` when it fails."""
        bound = {}
        for name in self.names:
            try:
                value = bound[name] = scope[name]
            except KeyError:
                continue  # unbound: CEL says which name is missing
            _check_ints(name, value)
        try:
            return self.program.execute(bound)
        except Exception as err:  # the Rust core raises ValueError/RuntimeError/OverflowError…
            raise ExpressionError(f"{self.source!r} failed: {_short(err)}") from None


def compile_expression(source: Any) -> Expression:
    """Compile ``source`` once (``ExpressionError`` naming what is wrong)."""
    if not isinstance(source, str) or not source.strip():
        raise ExpressionError(f"an expression is a non-empty string, got {source!r}")
    if len(source) > MAX_LENGTH:
        raise ExpressionError(f"expression is {len(source)} characters long (at most {MAX_LENGTH})")
    try:
        program = cel.compile(source)
        names = frozenset(program.variables())
    except Exception as err:
        raise ExpressionError(f"{_preview(source)} does not compile: {_short(err)}") from None
    return Expression(source, program, names)


def identifiers(data: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``data`` that can be CEL variables (the rest stay reachable as
    ``data["my-key"]``)."""
    return {k: v for k, v in data.items() if _bindable(k)}


def _bindable(key: Any) -> bool:
    return isinstance(key, str) and key not in _RESERVED and bool(_IDENT.match(key))


_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


def _check_ints(name: str, value: Any) -> None:
    """CEL's integers are 64-bit: a larger one would arrive rounded to a float (or as
    an unsigned int that no signed arithmetic accepts), so it fails clearly instead."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, int) and not isinstance(item, bool):
            if not _INT_MIN <= item <= _INT_MAX:
                raise ExpressionError(
                    f"{name!r} holds {item}, outside CEL's 64-bit integers (pass it as a string)"
                )
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def _preview(source: str) -> str:
    return repr(source if len(source) <= 120 else source[:117] + "...")


def _short(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."
