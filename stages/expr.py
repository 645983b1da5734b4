"""Safe, vectorised row expressions for validation rules: ``FAILED_QUERIES <= QUERIES``.

The text is parsed with `ast` and only a small grammar is accepted: column names, literals,
lists of literals, arithmetic, comparisons (chained), ``and``/``or``/``not``, ``in``/``not in``,
and the functions in `FUNCTIONS`. Nothing is looked up by attribute and nothing is imported or
called beyond that table, so a rule from a config file or another program cannot run code.
A column whose name is not an identifier is written ``col("NAME WITH SPACES")``.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa

from stages import coerce
from stages.errors import StageConfigError, StageInputError

MAX_LENGTH: Final = 2000
MAX_NODES: Final = 200

_COMPARE: Final[dict[type, Callable[[Any, Any], Any]]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
    ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
}  # fmt: skip
_BINARY: Final[dict[type, Callable[[Any, Any], Any]]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.BitAnd: operator.and_, ast.BitOr: operator.or_,
}  # fmt: skip


def _series(value: Any) -> pd.Series:
    if not isinstance(value, pd.Series):
        raise StageConfigError("expression function needs a column, got a literal")
    return value


FUNCTIONS: Final[dict[str, Callable[..., Any]]] = {
    "isnull": lambda v: _series(v).isna(),
    "notnull": lambda v: _series(v).notna(),
    "abs": lambda v: v.abs() if isinstance(v, pd.Series) else abs(v),
    "lower": lambda v: _series(v).astype("str").str.lower(),
    "upper": lambda v: _series(v).astype("str").str.upper(),
    "length": lambda v: _series(v).astype("str").str.len(),
}


class Expression:
    """A checked expression; `columns` are the names it reads."""

    def __init__(self, text: str) -> None:
        if not isinstance(text, str) or not text.strip():
            raise StageConfigError("expression must be non-empty text")
        if len(text) > MAX_LENGTH:
            raise StageConfigError(f"expression is {len(text)} characters, at most {MAX_LENGTH}")
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            raise StageConfigError(f"expression {text!r} does not parse: {exc.msg}") from exc
        nodes = list(ast.walk(tree))
        if len(nodes) > MAX_NODES:
            raise StageConfigError(f"expression {text!r} is too complex ({len(nodes)} nodes)")
        self.text = text
        self.columns: list[str] = []
        self._tree = tree
        self._check(tree.body)

    def _check(self, node: ast.AST) -> None:
        if isinstance(node, ast.Name):
            if node.id not in ("True", "False", "None") and node.id not in self.columns:
                self.columns.append(node.id)
            return
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, int | float | str | bool | type(None)):
                raise self._refuse(node)
            return
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else None
            if node.keywords or len(node.args) != 1 or (name not in FUNCTIONS and name != "col"):
                raise self._refuse(node)
            if name == "col":
                arg = node.args[0]
                if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                    raise self._refuse(node)
                if arg.value not in self.columns:
                    self.columns.append(arg.value)
                return
            self._check(node.args[0])
            return
        allowed = (ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Compare, ast.List, ast.Tuple)
        if not isinstance(node, allowed):
            raise self._refuse(node)
        if isinstance(node, ast.BinOp) and type(node.op) not in _BINARY:
            raise self._refuse(node)
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for i, op in enumerate(node.ops):
                if type(op) not in _COMPARE and not isinstance(op, ast.In | ast.NotIn):
                    raise self._refuse(op)
                # a list compared row by row would depend on the table's length
                lists = [o for o in operands[i : i + 2] if isinstance(o, ast.List | ast.Tuple)]
                if lists and not isinstance(op, ast.In | ast.NotIn):
                    raise StageConfigError(
                        f"expression {self.text!r}: a list may only follow 'in' or 'not in'"
                    )
        for child in ast.iter_child_nodes(node):
            if isinstance(
                child, ast.operator | ast.boolop | ast.unaryop | ast.cmpop | ast.expr_context
            ):
                continue
            self._check(child)

    def _refuse(self, node: ast.AST) -> StageConfigError:
        return StageConfigError(
            f"expression {self.text!r}: {type(node).__name__} is not allowed "
            f"(columns, literals, arithmetic, comparisons, and/or/not, in, {', '.join(FUNCTIONS)})"
        )

    def evaluate(self, df: pd.DataFrame) -> np.ndarray:
        """A boolean per row: True where the expression holds (missing values make it False)."""
        missing = [c for c in self.columns if c not in df.columns]
        if missing:
            raise StageInputError(
                f"expression {self.text!r}: column {missing[0]!r} is not in the data"
            )
        try:
            with np.errstate(all="ignore"):
                value = _Eval(df, self.text).visit(self._tree.body)
        except (TypeError, ValueError, ArithmeticError, pa.ArrowException) as exc:
            if isinstance(exc, StageConfigError):
                raise
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise StageInputError(
                f"expression {self.text!r} cannot run on this data: {reason}"
            ) from exc
        if isinstance(value, pd.Series):
            return value.fillna(False).to_numpy(dtype=bool, na_value=False)
        return np.full(len(df), bool(value))


class _Eval(ast.NodeVisitor):
    def __init__(self, df: pd.DataFrame, text: str) -> None:
        self.df = df
        self.text = text

    def visit_Name(self, node: ast.Name) -> Any:
        constants = {"True": True, "False": False, "None": None}
        return constants[node.id] if node.id in constants else self.df[node.id]

    def visit_Constant(self, node: ast.Constant) -> Any:
        return node.value

    def visit_List(self, node: ast.List) -> Any:
        return [self.visit(e) for e in node.elts]

    def visit_Tuple(self, node: ast.Tuple) -> Any:
        return [self.visit(e) for e in node.elts]

    def visit_Call(self, node: ast.Call) -> Any:
        name = node.func.id  # type: ignore[attr-defined]
        if name == "col":
            return self.df[node.args[0].value]  # type: ignore[attr-defined]
        return FUNCTIONS[name](self.visit(node.args[0]))

    def visit_BoolOp(self, node: ast.BoolOp) -> Any:
        values = [_truth(self.visit(v)) for v in node.values]
        combine = operator.and_ if isinstance(node.op, ast.And) else operator.or_
        result = values[0]
        for value in values[1:]:
            result = combine(result, value)
        return result

    def visit_UnaryOp(self, node: ast.UnaryOp) -> Any:
        value = self.visit(node.operand)
        if isinstance(node.op, ast.Not | ast.Invert):
            return ~_truth(value) if isinstance(value, pd.Series) else not value
        return -value if isinstance(node.op, ast.USub) else value

    def visit_BinOp(self, node: ast.BinOp) -> Any:
        left, right = self.visit(node.left), self.visit(node.right)
        if isinstance(left, str | list) or isinstance(right, str | list):
            raise StageConfigError("arithmetic on text or lists is not allowed in an expression")
        if isinstance(node.op, ast.Mult):
            # repeating text (or list cells) by a number can take any amount of memory
            for side in (left, right):
                if isinstance(side, pd.Series) and coerce.is_text(side):
                    what = "text" if side.name is None else f"text column {side.name!r}"
                    raise StageConfigError(
                        f"expression {self.text!r}: '*' on {what} is not allowed "
                        "(multiply numbers only)"
                    )
        return _BINARY[type(node.op)](left, right)

    def visit_Compare(self, node: ast.Compare) -> Any:
        left = self.visit(node.left)
        result: Any = True
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = self.visit(right_node)
            if isinstance(op, ast.In | ast.NotIn):
                if not isinstance(left, pd.Series) or not isinstance(right, list):
                    raise StageConfigError(
                        "'in' needs a column on the left and a list on the right"
                    )
                part = left.isin(right) & left.notna()
                part = ~part if isinstance(op, ast.NotIn) else part
            else:
                part = _truth(_COMPARE[type(op)](left, right))
            result = part if result is True else result & part
            left = right
        return result


def _truth(value: Any) -> Any:
    if isinstance(value, pd.Series):
        return value.fillna(False).astype(bool)
    return bool(value)
