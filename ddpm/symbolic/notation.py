"""The book's notation as SymPy objects, so that a shown equation can be the checked one.

A numbered equation on a book page is a SymPy relation (:class:`ddpm.checks.Equation`); the page
shows ``sympy.latex`` of it, and its checks compare parts of that same object with a derivation
or a measurement. The objects here print as the paper writes them and compare by their
arguments, so that ``Normal(x, m, v) == Normal(x, m2, v2)`` reduces to ``m = m2`` and ``v = v2``:

- :func:`bold` (``\\mathbf{x}_t``) and :func:`sym` (any LaTeX name) make symbols;
- :class:`Normal` is ``N(x; mean, variance)``; :func:`density` makes ``q(x_t | x_0)``-style
  densities; :func:`function` makes ``eps_theta(x_t, t)``-style functions;
- :class:`Expect`, :class:`KL`, :class:`SqNorm`, :class:`Var`, :class:`Cov`, :class:`Corr` and
  :class:`Named` (an underbraced term) are the operators the bound and the toolbox use.

Nothing here evaluates: an ``Expect`` stays an expectation. Checks compare such objects
structurally (same operator, equal arguments) and everything between them by algebra.
"""

from __future__ import annotations

import re
from functools import cache

import sympy as sp

__all__ = [
    "KL",
    "Corr",
    "Cov",
    "Expect",
    "Named",
    "Normal",
    "SqNorm",
    "Var",
    "bold",
    "density",
    "function",
    "given",
    "sym",
    "relation_latex",
]


def sym(latex: str, **assumptions) -> sp.Symbol:
    """A symbol printed verbatim as ``latex`` (the braces stop SymPy splitting at ``_``)."""
    return sp.Symbol("{" + latex + "}", **assumptions)


def bold(name: str, sub: str | None = None, **assumptions) -> sp.Symbol:
    """``\\mathbf{name}_{sub}`` (``\\boldsymbol`` for a Greek letter), real by default."""
    body = rf"\boldsymbol{{\{name}}}" if name.isalpha() and len(name) > 1 else rf"\mathbf{{{name}}}"
    assumptions.setdefault("real", True)
    return sym(body + (f"_{{{sub}}}" if sub else ""), **assumptions)


def _ident(latex: str) -> str:
    """A Python name for a class printed as ``latex`` (what ``srepr`` shows)."""
    return re.sub(r"\W+", "_", latex).strip("_") or "anonymous"


def _arg(printer, expr) -> str:
    return printer._print(expr)


class _Notation(sp.Function):
    """An operator of the book's notation: checks compare two of them argument by argument."""

    notation = True


class Normal(_Notation):
    """``N(x; mean, variance)``: the Gaussian density of ``x``; for a vector the variance
    carries the identity, ``variance * bold("I")``."""

    nargs = 3

    def _latex(self, printer) -> str:
        x, mean, var = (_arg(printer, a) for a in self.args)
        return rf"\mathcal{{N}}\!\left({x};\ {mean},\ {var}\right)"


class _Given(_Notation):
    """``a | b, c``: the bar of a conditional density, printed as ``\\mid``."""

    def _latex(self, printer) -> str:
        head, *rest = (_arg(printer, a) for a in self.args)
        return rf"{head} \mid {', '.join(rest)}" if rest else head


def given(variable: sp.Basic, *conditions: sp.Basic) -> sp.Basic:
    """The argument of a conditional density: ``variable | conditions``."""
    return _Given(variable, *conditions) if conditions else variable


@cache
def density(name: str) -> type[sp.Function]:
    """A density named by LaTeX ``name`` (``q``, ``p_\\theta``): ``density("q")(given(x, y))``
    prints ``q(x \\mid y)``. The same name gives the same class, so equal densities compare
    equal."""

    def _latex(self, printer) -> str:
        return rf"{name}\left({', '.join(_arg(printer, a) for a in self.args)}\right)"

    return type("density_" + _ident(name), (_Notation,), {"_latex": _latex})


@cache
def function(name: str) -> type[sp.Function]:
    """A function named by LaTeX ``name``, e.g. ``function(r"\\boldsymbol\\epsilon_\\theta")``,
    printed ``name(args)``; SymPy treats its applications as unknowns."""

    def _latex(self, printer) -> str:
        return rf"{name}\left({', '.join(_arg(printer, a) for a in self.args)}\right)"

    return type("function_" + _ident(name), (_Notation,), {"_latex": _latex})


class Expect(_Notation):
    """``E_{over}[expr]``; ``Expect(expr)`` leaves the subscript out."""

    def _latex(self, printer, exp=None) -> str:
        body = _arg(printer, self.args[0])
        over = ", ".join(_arg(printer, a) for a in self.args[1:])
        sub = f"_{{{over}}}" if over else ""
        text = rf"\mathbb{{E}}{sub}\left[{body}\right]"
        return f"{text}^{{{exp}}}" if exp else text


class KL(_Notation):
    """``D_KL(p || q)``."""

    nargs = 2

    def _latex(self, printer) -> str:
        p, q = (_arg(printer, a) for a in self.args)
        return rf"D_{{\mathrm{{KL}}}}\!\left({p} \,\|\, {q}\right)"


class SqNorm(_Notation):
    """``||v||^2``."""

    nargs = 1

    def _latex(self, printer, exp=None) -> str:
        body = rf"\left\|{_arg(printer, self.args[0])}\right\|^2"
        return rf"\left({body}\right)^{{{exp}}}" if exp else body


def _operator(name: str, nargs: int) -> type[sp.Function]:
    def _latex(self, printer, exp=None) -> str:
        body = (
            rf"\operatorname{{{name}}}\left[{', '.join(_arg(printer, a) for a in self.args)}\right]"
        )
        return f"{body}^{{{exp}}}" if exp else body

    return type(name, (_Notation,), {"nargs": nargs, "_latex": _latex})


Var = _operator("Var", 1)
Cov = _operator("Cov", 2)
Corr = _operator("Corr", 2)


class Named(_Notation):
    """``expr`` with a name under a brace: ``\\underbrace{expr}_{name}``; compares by ``expr``."""

    nargs = 2

    def _latex(self, printer) -> str:
        return rf"\underbrace{{{_arg(printer, self.args[0])}}}_{{{_arg(printer, self.args[1])}}}"


_RELATIONS = {sp.Eq: "=", sp.Le: r"\le", sp.Lt: "<", sp.Ge: r"\ge", sp.Gt: ">"}


def relation_latex(relation: sp.Basic, align: bool = False) -> str:
    """``lhs = rhs`` (or another relation) in LaTeX; with ``align``, ``lhs &= rhs``."""
    for kind, symbol in _RELATIONS.items():
        if isinstance(relation, kind):
            lhs, rhs = (sp.latex(side) for side in relation.args)
            return f"{lhs} {'&' if align else ''}{symbol} {rhs}"
    return ("& " if align else "") + sp.latex(relation)
