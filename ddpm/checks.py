"""Numbered equations whose shown form is the checked one, and checks that can fail.

A book page builds each numbered equation as a SymPy relation and glues it; the page shows it with
``{glue:math}``, so what the reader sees is ``sympy.latex`` of the object the checks took::

    shown = Normal(x_t, sp.sqrt(abar) * x_0, (1 - abar) * I)
    eq = Equation("2.3", sp.Eq(q(given(x_t, x_0)), shown, evaluate=False))
    eq.glue()                                # the page says ```{glue:math} eq-2.3```
    check_identity(
        eq, eq.rhs.args[2], derived_variance * I, "the variance of q(x_t | x_0)",
        against_from="derivation: ddpm.symbolic.derive_marginal_step",
        mutants={"alpha_bar_t for 1 - alpha_bar_t": abar * I},
    )

Every check compares two sides obtained independently and names where each comes from
(``"kind: detail"``, the kinds in :data:`SOURCES`). The first side, the *claim*, is by default a
part of the shown equation (the check refuses one that is not). Every check carries mutants:
plausible wrong versions of the claim, each run through the same comparison, each of which must
be rejected. A check that fails, or whose mutant passes, raises :class:`CheckFailed`, so the cell
errors and the build stops with the page and the equation named.

Each equation and each check leaves a record in its output's metadata (:data:`EQUATION_KEY`,
:data:`OUTPUT_KEY`), which the book reads to tie every shown equation to its checks and to list
them on the verification page (``book/_ext/checks_report.py``).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = [
    "EQUATION_KEY",
    "OUTPUT_KEY",
    "SOURCES",
    "CheckFailed",
    "CheckRecord",
    "Equation",
    "MutantRecord",
    "check_close",
    "check_holds",
    "check_identity",
]

OUTPUT_KEY = "ddpm_check"  # output metadata keys read by book/_ext/checks_report.py
EQUATION_KEY = "ddpm_equation"

# Where a side of a check comes from: "kind: detail", the kind one of these.
SOURCES = {
    "shown": "the shown equation",
    "derivation": "a SymPy derivation from the definitions",
    "package": "the package's float64 tables or functions",
    "monte-carlo": "a Monte-Carlo estimate",
    "exact": "an exactly solvable case",
    "reference": "a reference library",
}


class CheckFailed(AssertionError):
    """A check of an equation did not hold, or a mutant of it was not rejected."""


class Equation:
    """A numbered equation: one or more SymPy relations, shown as ``sympy.latex`` of them.

    ``label`` is the equation's number (its ``\\tag``). A ``definition`` introduces notation or
    states a modelling choice: nothing to check, and the verification page lists it apart.
    Several relations are set as aligned lines. ``paper`` names what the equation derives or
    restates in Ho et al. (2020): equation numbers as strings ("4", "17") and algorithms
    ("Algorithm 1"); the concordance page is built from them.
    """

    def __init__(
        self,
        label: str,
        *relations: Any,
        definition: bool = False,
        paper: tuple[str, ...] | str = (),
    ) -> None:
        import sympy as sp

        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"an equation needs a label (its number), got {label!r}")
        if not relations:
            raise ValueError(f"equation ({label}) needs at least one relation")
        self.label = label.strip()
        self.relations = tuple(sp.sympify(r) for r in relations)
        self.definition = definition
        self.paper = (paper,) if isinstance(paper, str) else tuple(paper)

    @property
    def lhs(self):
        return self.relations[0].lhs

    @property
    def rhs(self):
        return self.relations[0].rhs

    @property
    def latex(self) -> str:
        """The TeX shown on the page, the tag included."""
        from ddpm.symbolic.notation import relation_latex

        if len(self.relations) == 1:
            body = relation_latex(self.relations[0])
        else:
            lines = " \\\\\n".join(relation_latex(r, align=True) for r in self.relations)
            body = f"\\begin{{aligned}}\n{lines}\n\\end{{aligned}}"
        return f"{body} \\tag{{{self.label}}}"

    def contains(self, expr: Any) -> bool:
        """Whether ``expr`` is one of the relations or a part of one."""
        import sympy as sp

        return any(expr == node for r in self.relations for node in sp.preorder_traversal(r))

    def record(self) -> dict[str, Any]:
        import sympy as sp

        return {
            "label": self.label,
            "latex": self.latex,
            "definition": self.definition,
            "paper": list(self.paper),
            "srepr": [sp.srepr(r) for r in self.relations],
        }

    def _repr_mimebundle_(self, include=None, exclude=None) -> tuple[dict, dict]:
        data = {"text/latex": f"$$\n{self.latex}\n$$", "text/plain": f"({self.label})"}
        return data, {EQUATION_KEY: self.record()}

    def glue(self) -> None:
        """Glue the equation as ``eq-<label>`` for ``{glue:math}`` (and its record with it)."""
        from myst_nb import glue

        glue(f"eq-{self.label}", self, display=False)


@dataclass(frozen=True)
class MutantRecord:
    description: str
    rejected: bool
    detail: str


@dataclass(frozen=True)
class CheckRecord:
    """The outcome of one check, as shown under the cell and listed in the verification report."""

    label: str  # the equation's number
    kind: Literal["identity", "close", "holds"]
    description: str
    passed: bool  # the claim held and every mutant was rejected
    detail: str  # what was compared and by how much it differed
    claim_from: str
    against_from: str
    claim_shown: bool  # the claim is a part of the shown equation
    mutants: tuple[MutantRecord, ...] = field(default_factory=tuple)

    @property
    def message(self) -> str:
        status = "holds" if self.passed else "failed"
        text = f"check of equation ({self.label}) {status}: {self.description}: {self.detail}"
        passed = [m.description for m in self.mutants if not m.rejected]
        if passed:
            text += f"; mutant not rejected (the check cannot tell it from the claim): {passed}"
        return text

    def _repr_mimebundle_(self, include=None, exclude=None) -> tuple[dict, dict]:
        mark, colour = ("\u2713", "#1a7f37") if self.passed else ("\u2717", "#cf222e")
        rejected = sum(m.rejected for m in self.mutants)
        badge = (
            f'<span style="background:{colour};color:#fff;border-radius:0.8em;'
            f'padding:0.05em 0.6em;font-weight:600">{mark} ({html.escape(self.label)})</span>'
        )
        page_html = (
            f'<div class="ddpm-check ddpm-check-{"passed" if self.passed else "failed"}" '
            f'data-label="{html.escape(self.label)}" style="margin:0.2em 0;font-size:0.9em">'
            f"{badge} {html.escape(self.description)} "
            f'<span style="color:#57606a">({rejected} of {len(self.mutants)} mutants '
            f"rejected)</span></div>"
        )
        data = {"text/plain": f"{mark} {self.message}", "text/html": page_html}
        return data, {OUTPUT_KEY: asdict(self)}


def check_identity(
    equation: Equation,
    claim: Any,
    against: Any,
    description: str,
    *,
    against_from: str,
    mutants: Mapping[str, Any],
    claim_from: str | None = None,
) -> None:
    """Check symbolically that ``claim`` equals ``against``.

    Both are SymPy expressions (matrices, relations, or the notation of
    :mod:`ddpm.symbolic.notation`, compared operator by operator). Scalars are equal when
    ``simplify`` reduces their difference to zero or :func:`ddpm.symbolic.identity_holds` shows it
    vanishes (logarithms whose arguments are positive on the formulas' domain). With
    ``against=True`` the claim is a relation that must hold as it stands: an ``Eq``, or an
    inequality whose greater side minus its lesser SymPy proves nonnegative (positive if strict).
    ``mutants`` are wrong versions of ``claim``; each must fail the same comparison.
    """

    def compare(candidate):
        return _identity_outcome(candidate, against)

    _run(
        "identity",
        equation,
        claim,
        against,
        description,
        compare,
        claim_from,
        against_from,
        mutants,
    )


def check_close(
    equation: Equation,
    claim: Any,
    against: Any,
    description: str,
    *,
    against_from: str,
    mutants: Mapping[str, Any],
    claim_from: str | None = None,
    at: Mapping[Any, Any] | None = None,
    rtol: float = 1e-7,
    atol: float = 0.0,
) -> None:
    """Check numbers elementwise: ``|claim - against| <= atol + rtol * |against|``.

    With ``at`` (symbol -> value), ``claim`` and the mutants are SymPy expressions evaluated
    there in float64 (arrays broadcast); the claim must then be a part of the shown equation.
    Without it they are numbers: scalars, sequences, numpy arrays or torch tensors, and
    ``claim_from`` says where ``claim`` comes from. A NaN never matches.
    """

    def compare(candidate):
        value = _evaluate(candidate, at) if at is not None else candidate
        return _close_outcome(value, against, rtol, atol)

    if at is None and claim_from is None:
        raise ValueError(
            f"check of ({equation.label}): a numeric claim needs claim_from (or pass the "
            "claim as a SymPy part of the equation with `at`)"
        )
    _run("close", equation, claim, against, description, compare, claim_from, against_from, mutants)


def check_holds(
    equation: Equation,
    claim: Any,
    description: str,
    *,
    at: Mapping[Any, Any],
    against_from: str,
    mutants: Mapping[str, Any],
    claim_from: str | None = None,
) -> None:
    """Check numerically that the relation ``claim`` (``<=``, ``<``, ``=``...) holds at ``at``.

    ``at`` maps the relation's symbols to numbers or arrays (broadcast together, every element
    must satisfy the relation); ``against_from`` says where those values come from.
    """

    def compare(candidate):
        return _holds_outcome(candidate, at)

    _run("holds", equation, claim, at, description, compare, claim_from, against_from, mutants)


def _run(kind, equation, claim, against, description, compare, claim_from, against_from, mutants):
    if not isinstance(equation, Equation):
        raise TypeError(f"a check takes the Equation it checks, got {equation!r}")
    label = equation.label
    shown = claim_from is None
    if shown and not equation.contains(claim):
        raise ValueError(
            f"check of ({label}): the claim is not a part of the shown equation; pass that part, "
            "or say where the claim comes from with claim_from"
        )
    claim_from = _source(label, claim_from or f"shown: equation ({label})")
    against_from = _source(label, against_from)
    if claim_from == against_from:
        raise ValueError(f"check of ({label}): both sides come from {claim_from!r}")
    if claim is against and not _is_sympy(claim):  # SymPy interns equal expressions
        raise ValueError(f"check of ({label}): the two sides are the same object")
    if not mutants:
        raise ValueError(f"check of ({label}) needs at least one mutant, a wrong claim to reject")
    passed, detail = compare(claim)
    outcomes = []
    for name, mutant in mutants.items():
        if _same_object(mutant, claim):
            raise ValueError(f"check of ({label}): mutant {name!r} is the claim itself")
        mutant_passed, mutant_detail = compare(mutant)
        outcomes.append(MutantRecord(name, not mutant_passed, mutant_detail))
    all_rejected = all(m.rejected for m in outcomes)
    _report(
        CheckRecord(
            label,
            kind,
            description,
            passed and all_rejected,
            detail,
            claim_from,
            against_from,
            shown,
            tuple(outcomes),
        )
    )


def _source(label: str, source: str) -> str:
    kind = source.split(":", 1)[0].strip()
    if kind not in SOURCES:
        raise ValueError(
            f"check of ({label}): a side's source is 'kind: detail' with kind one of "
            f"{', '.join(SOURCES)}; got {source!r}"
        )
    return source.strip()


def _is_sympy(value: Any) -> bool:
    import sympy as sp

    return isinstance(value, sp.Basic)


def _same_object(a: Any, b: Any) -> bool:
    """The same object, or two SymPy expressions with the same tree."""
    if a is b:
        return True
    if _is_sympy(a) and _is_sympy(b):
        import sympy as sp

        return sp.srepr(a) == sp.srepr(b)
    return False


def _identity_outcome(claim: Any, against: Any) -> tuple[bool, str]:
    import sympy as sp

    if against is True or against is sp.true:
        return _relation_outcome(sp.sympify(claim))
    return _structural_outcome(sp.sympify(claim), sp.sympify(against))


def _is_notation(expr: Any) -> bool:
    """An operator of the book's notation (or an undefined function): compared by arguments."""
    from sympy.core.function import AppliedUndef

    return isinstance(expr, AppliedUndef) or getattr(expr, "notation", False) is True


def _structural_outcome(claim: Any, against: Any) -> tuple[bool, str]:
    """Equal relations side by side, equal notation operators argument by argument, and
    everything else by :func:`_difference_outcome`."""
    import sympy as sp

    if isinstance(claim, sp.Rel) or isinstance(against, sp.Rel):
        if type(claim) is not type(against):
            return False, f"relations differ: {type(claim).__name__} vs {type(against).__name__}"
        outcomes = [
            _structural_outcome(a, b) for a, b in zip(claim.args, against.args, strict=True)
        ]
        return all(ok for ok, _ in outcomes), "; ".join(d for _, d in outcomes)
    if _is_notation(claim) or _is_notation(against):
        if claim.func != against.func or len(claim.args) != len(against.args):
            return False, f"{sp.sstr(claim)} and {sp.sstr(against)} are different expressions"
        outcomes = [
            _structural_outcome(a, b) for a, b in zip(claim.args, against.args, strict=True)
        ]
        failed = [d for ok, d in outcomes if not ok]
        if failed:
            return False, f"{type(claim).__name__}: " + "; ".join(failed)
        return True, f"{type(claim).__name__}: every argument agrees"
    return _difference_outcome(claim, against)


def _difference_outcome(lhs: Any, rhs: Any) -> tuple[bool, str]:
    """Whether ``lhs - rhs`` is zero: by ``simplify``, else (scalars) by ``identity_holds``."""
    import sympy as sp

    difference = sp.simplify(lhs - rhs)
    detail = f"simplify(claim - other) = {sp.sstr(difference)}"
    if isinstance(difference, sp.MatrixBase):
        return bool(difference.is_zero_matrix), detail
    if difference == 0 or sp.expand(difference) == 0:
        return True, detail
    from ddpm.symbolic import identity_holds

    if identity_holds(lhs, rhs):
        return True, "claim - other = 0 by ddpm.symbolic.identity_holds"
    return False, detail


def _relation_outcome(relation: Any) -> tuple[bool, str]:
    import sympy as sp

    if relation is sp.true:
        return True, "holds as written"
    if isinstance(relation, sp.Equality):
        return _structural_outcome(relation.lhs, relation.rhs)
    if isinstance(relation, (sp.StrictGreaterThan, sp.StrictLessThan)):
        gap = sp.simplify(relation.gts - relation.lts)
        return gap.is_positive is True, f"greater side - lesser side = {sp.sstr(gap)}, must be > 0"
    if isinstance(relation, (sp.GreaterThan, sp.LessThan)):
        gap = sp.simplify(relation.gts - relation.lts)
        return (
            gap.is_nonnegative is True,
            f"greater side - lesser side = {sp.sstr(gap)}, must be >= 0",
        )
    simplified = sp.simplify(relation)
    return simplified is sp.true, f"simplifies to {sp.sstr(simplified)}"


def _evaluate(expr: Any, at: Mapping[Any, Any]) -> np.ndarray:
    """A SymPy expression evaluated in float64 at ``at``.

    ``at`` maps symbols to numbers or arrays; an ``IndexedBase`` to the array its entries are
    read from (``a[k]`` is ``values[k]``); an applied operator (``Var(X)``) to its value, which
    stands for it whole. A Python ``int`` stays an integer, so that it can bound a ``Sum``.
    """
    import sympy as sp

    expr = sp.sympify(expr)
    given = set(at)
    for key in at:
        if isinstance(key, sp.IndexedBase):
            given.add(key.label)
        elif not isinstance(key, sp.Symbol):
            given |= key.free_symbols
    missing = {
        z
        for z in expr.free_symbols
        if z not in given and not (isinstance(z, sp.Indexed) and z.base in given)
    }
    if missing:
        raise ValueError(f"no value given for {sorted(map(str, missing))}")
    symbols = list(at)
    values = [at[z] if isinstance(at[z], int) else _as_float_array(at[z]) for z in symbols]
    return np.asarray(sp.lambdify(symbols, expr, modules="numpy")(*values), dtype=np.float64)


def _holds_outcome(relation: Any, at: Mapping[Any, Any]) -> tuple[bool, str]:
    import sympy as sp

    relation = sp.sympify(relation)
    if not isinstance(relation, sp.Rel):
        raise ValueError(f"check_holds takes a relation, got {relation}")
    lhs, rhs = np.broadcast_arrays(_evaluate(relation.lhs, at), _evaluate(relation.rhs, at))
    ops = {
        sp.LessThan: np.less_equal,
        sp.StrictLessThan: np.less,
        sp.GreaterThan: np.greater_equal,
        sp.StrictGreaterThan: np.greater,
    }
    if isinstance(relation, sp.Equality):
        ok = np.isclose(lhs, rhs, rtol=1e-9, atol=0.0)
    else:
        ok = ops[type(relation)](lhs, rhs)
    symbol = {
        sp.LessThan: "<=",
        sp.StrictLessThan: "<",
        sp.GreaterThan: ">=",
        sp.StrictGreaterThan: ">",
        sp.Equality: "==",
    }[type(relation)]
    if ok.all():
        margin = np.min(np.abs(lhs - rhs)) if lhs.size else 0.0
        return True, f"{lhs.size} values satisfy lhs {symbol} rhs (closest margin {margin:.3g})"
    index = np.unravel_index(int(np.argmin(ok)), ok.shape) if ok.ndim else ()
    return False, (
        f"{int((~ok).sum())} of {ok.size} values violate lhs {symbol} rhs; e.g. lhs "
        f"{lhs[index]:.10g}, rhs {rhs[index]:.10g}"
    )


def _as_float_array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch here
        value = value.detach().cpu()
        value = value.double() if value.is_floating_point() else value
        value = value.numpy()
    return np.asarray(value, dtype=np.float64)


def _close_outcome(actual: Any, expected: Any, rtol: float, atol: float) -> tuple[bool, str]:
    a, e = _as_float_array(actual), _as_float_array(expected)
    if e.ndim > 0 and a.shape != e.shape:
        return False, f"shapes differ: claim {a.shape}, other {e.shape}"
    e = np.broadcast_to(e, a.shape)
    error = np.abs(a - e)
    allowed = atol + rtol * np.abs(e)
    bad = ~(error <= allowed)  # NaN compares False, so it counts as a mismatch
    tolerance = f"rtol={rtol:g}, atol={atol:g}"
    if not bad.any():
        worst = float(error.max()) if error.size else 0.0
        return True, f"max |claim - other| = {worst:.3g} ({tolerance}, {error.size} values)"
    excess = np.where(np.isnan(error), np.inf, error - allowed)
    index = np.unravel_index(int(np.argmax(excess)), a.shape) if a.ndim else ()
    where = f" at index {tuple(int(i) for i in index)}" if a.ndim else ""
    return False, (
        f"{int(bad.sum())} of {bad.size} values differ; worst{where}: claim {a[index]:.10g}, "
        f"other {e[index]:.10g}, |difference| {error[index]:.3g} > allowed "
        f"{allowed[index]:.3g} ({tolerance})"
    )


def _report(record: CheckRecord) -> None:
    """Show the record in the notebook (when running in one) and raise if the check failed."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        get_ipython = None
    if get_ipython is not None and get_ipython() is not None:
        display(record)
    if not record.passed:
        raise CheckFailed(record.message)
