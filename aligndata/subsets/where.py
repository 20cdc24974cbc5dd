"""``--where EXPR``: a condition on a shard's metadata columns, e.g. ``language == "en" and width >= 256``.

Never ``eval``: the text is parsed with ``ast`` and only these forms are accepted: column names, constants
(strings, numbers, True/False, None after ``is``), comparisons (``== != < <= > >=``, chained), ``in`` / ``not
in`` a literal list, ``is None`` / ``is not None``, ``and`` / ``or`` / ``not``, and ``+ - * /`` with unary minus.
Everything else (calls, attribute access, indexing, comprehensions, lambdas, f-strings, ``&``/``|``, ...) is
refused with a message naming it. The tree is evaluated with pyarrow.compute on whole columns (one shard's
parquet at a time), so it costs vectorised kernels, not Python per row.

Missing values follow SQL: a comparison with null is unknown, ``not unknown`` is unknown, ``unknown and False`` is
False, ``unknown or True`` is True, and a row whose condition is unknown is not kept. ``language is None`` picks the
rows without a value. ``/`` is true division (integers are divided as floats).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aligndata.subsets import SubsetError

MAX_LENGTH = 10_000

_COMPARE = {ast.Eq: "equal", ast.NotEq: "not_equal", ast.Lt: "less", ast.LtE: "less_equal", ast.Gt: "greater",
            ast.GtE: "greater_equal"}
_ARITHMETIC = {ast.Add: "add_checked", ast.Sub: "subtract_checked", ast.Mult: "multiply_checked"}
_FORBIDDEN = {  # node type -> how the refusal names it
    ast.Call: "function calls", ast.Attribute: "attribute access (x.y)", ast.Subscript: "indexing (x[...])",
    ast.Lambda: "lambdas", ast.ListComp: "comprehensions", ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions", ast.GeneratorExp: "comprehensions", ast.NamedExpr: "assignments (:=)",
    ast.IfExp: "if/else expressions", ast.JoinedStr: "f-strings", ast.Starred: "starred expressions",
    ast.Dict: "dict literals", ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield",
    ast.BitAnd: "& (write and)", ast.BitOr: "| (write or)", ast.Invert: "~ (write not)", ast.BitXor: "^",
    ast.LShift: "<<", ast.RShift: ">>", ast.Pow: "**", ast.Mod: "%", ast.FloorDiv: "//", ast.MatMult: "@",
}
ALLOWED_HELP = ("column names, numbers, strings, True/False, comparisons, in / not in [a list], is None, "
                "and / or / not, + - * /")


@dataclass(frozen=True)
class Where:
    """A parsed, checked condition; ``columns`` are the names it reads."""

    text: str
    tree: ast.Expression = field(repr=False, compare=False)
    columns: tuple[str, ...]

    def check_columns(self, names: list[str], shard: str) -> None:
        """Raise SubsetError naming the columns the condition reads that the shard does not have."""
        missing = [name for name in self.columns if name not in names]
        if missing:
            hint = " (model scores are --min-score / --top-fraction)" if "score" in missing else ""
            raise SubsetError(f"--where {_shown(self.text)}: unknown column {', '.join(map(repr, missing))} in "
                              f"shard {shard}{hint}; its columns: {', '.join(names)}")

    def mask(self, table: pa.Table, shard: str) -> np.ndarray:
        """Which rows of ``table`` satisfy the condition (unknown counts as not), as a numpy bool array."""
        self.check_columns(table.column_names, shard)
        try:
            result = _Evaluator(self.text, table).eval(self.tree.body)
        except pa.ArrowException as err:
            raise SubsetError(f"--where {_shown(self.text)} on shard {shard}: {_arrow_message(err)}") from None
        except RecursionError:
            raise SubsetError("--where: the expression is nested too deeply") from None
        if isinstance(result, pa.Scalar):  # no column involved, e.g. "1 == 1"
            result = pa.array([result.as_py()] * table.num_rows, type=pa.bool_())
        if not pa.types.is_boolean(result.type):
            raise SubsetError(f"--where {_shown(self.text)} gives {result.type} values, not a condition (compare it, "
                              f"e.g. width >= 256)")
        return pc.fill_null(result, False).to_numpy(zero_copy_only=False).astype(bool)


def compile_where(text: str) -> Where:
    """Parse and check ``text``; raises SubsetError naming what is not allowed."""
    if not text or not text.strip():
        raise SubsetError("--where is empty")
    if len(text) > MAX_LENGTH:
        raise SubsetError(f"--where is {len(text)} characters long (at most {MAX_LENGTH})")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise SubsetError(f"--where {_shown(text)}: invalid syntax at column {err.offset or '?'} ({err.msg})") from None
    except (RecursionError, MemoryError, ValueError) as err:  # too deeply nested; NUL bytes
        raise SubsetError(f"--where: cannot parse the expression ({type(err).__name__})") from None
    columns: list[str] = []
    try:
        _check(tree.body, text, columns)
    except RecursionError:
        raise SubsetError("--where: the expression is nested too deeply") from None
    return Where(text, tree, tuple(dict.fromkeys(columns)))


def _refuse(text: str, what: str) -> SubsetError:
    return SubsetError(f"--where {_shown(text)}: not allowed: {what} (allowed: {ALLOWED_HELP})")


def _check(node: ast.AST, text: str, columns: list[str]) -> None:
    if type(node) in _FORBIDDEN:
        raise _refuse(text, _FORBIDDEN[type(node)])
    if isinstance(node, ast.Name):
        columns.append(node.id)
    elif isinstance(node, ast.Constant):
        _check_constant(node, text)
    elif isinstance(node, ast.BoolOp):
        for value in node.values:
            _check(value, text, columns)
    elif isinstance(node, ast.UnaryOp):
        if type(node.op) in _FORBIDDEN:
            raise _refuse(text, _FORBIDDEN[type(node.op)])
        _check(node.operand, text, columns)
    elif isinstance(node, ast.BinOp):
        if type(node.op) in _FORBIDDEN or not isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
            raise _refuse(text, _FORBIDDEN.get(type(node.op), f"the operator {type(node.op).__name__}"))
        _check(node.left, text, columns)
        _check(node.right, text, columns)
    elif isinstance(node, ast.Compare):
        _check(node.left, text, columns)
        operands = [node.left, *node.comparators]
        for op, left, right in zip(node.ops, operands, operands[1:]):
            if isinstance(op, (ast.In, ast.NotIn)):
                if not isinstance(right, (ast.List, ast.Tuple, ast.Set)):
                    raise SubsetError(f"--where {_shown(text)}: 'in' needs a literal list on its right, e.g. "
                                      f"language in [\"en\", \"de\"]")
                for element in right.elts:
                    if not isinstance(element, ast.Constant) or element.value is None:
                        raise SubsetError(f"--where {_shown(text)}: the list after 'in' may hold only strings, numbers "
                                          f"and True/False")
                    _check_constant(element, text)
                continue
            if isinstance(op, (ast.Is, ast.IsNot)):
                if not (isinstance(right, ast.Constant) and right.value is None):
                    raise SubsetError(f"--where {_shown(text)}: 'is' is only for 'is None' / 'is not None' (compare "
                                      f"values with ==)")
                continue
            _check(right, text, columns)
    else:
        raise _refuse(text, _FORBIDDEN.get(type(node), f"{type(node).__name__} expressions"))


def _check_constant(node: ast.Constant, text: str) -> None:
    value = node.value
    if value is None:
        raise SubsetError(f"--where {_shown(text)}: None only after 'is' / 'is not' (a comparison with a missing value "
                          f"is never true)")
    if not isinstance(value, (str, int, float, bool)):
        raise _refuse(text, f"{type(value).__name__} constants")
    if isinstance(value, int) and not -2**63 <= value < 2**63:
        raise SubsetError(f"--where {_shown(text)}: the number {value} does not fit in 64 bits")


class _Evaluator:
    """Columns and constants become pyarrow arrays and scalars; operators become pyarrow.compute kernels."""

    def __init__(self, text: str, table: pa.Table):
        self.text = text
        self.table = table

    def eval(self, node: ast.AST):
        if isinstance(node, ast.Name):
            return self.table.column(node.id)
        if isinstance(node, ast.Constant):
            return pa.scalar(node.value)
        if isinstance(node, ast.BoolOp):
            kernel = pc.and_kleene if isinstance(node.op, ast.And) else pc.or_kleene
            values = [self._condition(value) for value in node.values]
            result = values[0]
            for value in values[1:]:
                result = kernel(result, value)
            return result
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.Not):
                return pc.invert(self._condition(node.operand))
            operand = self.eval(node.operand)
            return pc.negate_checked(operand) if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp):
            left, right = self.eval(node.left), self.eval(node.right)
            if isinstance(node.op, ast.Div):
                return pc.divide(pc.cast(left, pa.float64()), pc.cast(right, pa.float64()))
            return pc.call_function(_ARITHMETIC[type(node.op)], [left, right])
        if isinstance(node, ast.Compare):
            return self._compare(node)
        raise AssertionError(f"unchecked node {type(node).__name__}")  # _check refused it already

    def _condition(self, node: ast.AST):
        value = self.eval(node)
        if not pa.types.is_boolean(value.type):
            raise SubsetError(f"--where {_shown(self.text)}: {ast.unparse(node)!r} is {value.type}, not a condition "
                              f"(compare it, e.g. {ast.unparse(node)} > 0)")
        return value

    def _compare(self, node: ast.Compare):
        result = None
        left = self.eval(node.left)
        for op, right_node in zip(node.ops, node.comparators):
            if isinstance(op, (ast.Is, ast.IsNot)):
                part = pc.is_null(left) if isinstance(op, ast.Is) else pc.is_valid(left)
                right = left  # 'x is None < y' is not a sensible chain; keep comparing x
            elif isinstance(op, (ast.In, ast.NotIn)):
                values = pa.array([element.value for element in right_node.elts])
                found = pc.is_in(left, value_set=values)
                found = pc.if_else(pc.is_null(left), pa.scalar(None, pa.bool_()), found)  # unknown stays unknown
                part = found if isinstance(op, ast.In) else pc.invert(found)
                right = left
            else:
                right = self.eval(right_node)
                part = pc.call_function(_COMPARE[type(op)], [left, right])
            result = part if result is None else pc.and_kleene(result, part)
            left = right
        return result


def _shown(text: str) -> str:
    """The expression as messages quote it (a long one shortened)."""
    return repr(text if len(text) <= 120 else text[:119] + "…")


def _arrow_message(err: Exception) -> str:
    message = str(err).splitlines()[0]
    if "no kernel matching input types" in message:
        return f"the types do not match: {message.split('matching input types', 1)[1].strip()}"
    return message
