"""Money: exact ``Decimal`` values in USD, stored without loss on every database.

PostgreSQL stores money as ``NUMERIC(30, 12)``. SQLite has no exact decimal type (its NUMERIC
affinity turns values into floats), so there money is stored as the canonical decimal string
and summed with an exact aggregate registered on every connection (see ``db.py``). Queries use
``money_sum(column)``, which compiles to ``sum()`` on PostgreSQL and ``decimal_sum()`` on SQLite.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import types
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

ZERO = Decimal(0)
# Twelve places keep a single token of the cheapest price exact (0.0055 USD/MTok = 5.5e-9).
SCALE = Decimal("0.000000000001")
_PLACES = 12


def _canonical(value: Decimal) -> str:
    """Return a fixed-point string for ``value`` at the storage scale."""
    return format(value.quantize(SCALE), "f")


class Money(types.TypeDecorator[Decimal]):
    """An exact USD amount: NUMERIC on PostgreSQL, a decimal string on SQLite."""

    impl = types.Numeric(30, 12)
    cache_ok = True

    def __repr__(self) -> str:
        return "Money()"

    def load_dialect_impl(self, dialect: Dialect) -> types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(types.String(48))
        return dialect.type_descriptor(types.Numeric(30, 12, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            # Floats would smuggle binary rounding into the ledger; refuse them outright.
            if isinstance(value, float):
                raise TypeError("money must be a Decimal, not a float")
            value = Decimal(value)
        if dialect.name == "sqlite":
            return _canonical(value)
        return value.quantize(SCALE)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if isinstance(value, Decimal):
            return value
        return Decimal(str(value))


class money_sum(FunctionElement[Decimal]):
    """An exact SUM over a money column (NULL when there are no rows)."""

    type = Money()
    inherit_cache = True
    name = "money_sum"


@compiles(money_sum)
def _money_sum_default(element: money_sum, compiler: SQLCompiler, **kw: Any) -> str:
    return f"sum({compiler.process(element.clauses, **kw)})"


@compiles(money_sum, "sqlite")
def _money_sum_sqlite(element: money_sum, compiler: SQLCompiler, **kw: Any) -> str:
    return f"decimal_sum({compiler.process(element.clauses, **kw)})"


class DecimalSum:
    """SQLite aggregate: the exact sum of decimal strings, returned as a decimal string.

    Stored values are canonical (twelve decimals), so each is summed as an integer count of
    1e-12 USD: exact like Decimal, and about twice as fast per row. Anything else (a value
    written by hand) takes the Decimal path.
    """

    def __init__(self) -> None:
        self.units = 0
        self.extra: Decimal | None = None
        self.seen = False

    def step(self, value: Any) -> None:
        if value is None:
            return
        self.seen = True
        if isinstance(value, str) and len(value) > _PLACES and value[-_PLACES - 1] == ".":
            self.units += int(value.replace(".", "", 1))
            return
        amount = Decimal(str(value))
        self.extra = amount if self.extra is None else self.extra + amount

    def finalize(self) -> str | None:
        if not self.seen:
            return None
        total = Decimal(self.units).scaleb(-_PLACES)
        if self.extra is not None:
            total += self.extra
        return _canonical(total)
