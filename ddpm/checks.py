"""Checks that tie the book's equations to the package.

A page states an equation, then runs a check on it in the next code cell::

    $$
    \\bar\\alpha_t = \\prod_{s=1}^t \\alpha_s \\tag{2.3}
    $$

    check_identity("2.3", lhs, rhs, "the marginal variance is 1 - alpha_bar_t")
    check_close("2.3", schedule.alpha_bar, np.cumprod(schedule.alphas), "table vs product")

The label names the equation: its ``\\tag`` or its MyST label. Each check shows a badge with its
status under the cell, records itself in that output's metadata (key ``OUTPUT_KEY``) so the book
can list every check on its verification page, and raises :class:`CheckFailed` when it fails, so
the cell errors and the build stops with the page and the equation named.
"""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

__all__ = ["OUTPUT_KEY", "CheckFailed", "CheckRecord", "check_close", "check_identity"]

OUTPUT_KEY = "ddpm_check"  # output metadata key read by the book (book/_ext/checks_report.py)


class CheckFailed(AssertionError):
    """A check of an equation did not hold; the message names the equation and what differed."""


@dataclass(frozen=True)
class CheckRecord:
    """The outcome of one check, as shown under the cell and listed in the verification report."""

    label: str  # the equation's tag or label, e.g. "2.3"
    kind: Literal["identity", "close"]
    description: str
    passed: bool
    detail: str  # what was compared and by how much it differed

    @property
    def message(self) -> str:
        status = "holds" if self.passed else "failed"
        return f"check of equation ({self.label}) {status}: {self.description}: {self.detail}"

    def _repr_mimebundle_(self, include=None, exclude=None) -> tuple[dict, dict]:
        mark, colour = ("\u2713", "#1a7f37") if self.passed else ("\u2717", "#cf222e")
        badge = (
            f'<span style="background:{colour};color:#fff;border-radius:0.8em;'
            f'padding:0.05em 0.6em;font-weight:600">{mark} ({html.escape(self.label)})</span>'
        )
        page_html = (
            f'<div class="ddpm-check ddpm-check-{"passed" if self.passed else "failed"}" '
            f'data-label="{html.escape(self.label)}" style="margin:0.2em 0;font-size:0.9em">'
            f"{badge} {html.escape(self.description)} "
            f'<span style="color:#57606a">({html.escape(self.detail)})</span></div>'
        )
        data = {"text/plain": f"{mark} {self.message}", "text/html": page_html}
        return data, {OUTPUT_KEY: asdict(self)}


def check_identity(label: str, lhs: Any, rhs: Any, description: str) -> None:
    """Check a SymPy identity: ``simplify(lhs - rhs) == 0``.

    ``lhs`` and ``rhs`` are SymPy expressions (or matrices) that must be equal. When ``simplify``
    leaves a scalar difference nonzero (it does not merge ``log(1 - alpha_t)`` terms, not knowing
    that 1 - alpha_t > 0), :func:`ddpm.symbolic.identity_holds` decides, by polynomial arithmetic
    or, with logarithms, by showing that the difference has zero derivatives and vanishes at a
    point with every symbol in (0, 1/2]: the identity then holds on the formulas' domain, not
    necessarily for every complex value. A false identity fails either way.

    Pass ``rhs=True`` to check that ``lhs`` holds as it stands: an ``Eq`` (decided as above), or
    an inequality such as ``Le(a, b)``, which holds when ``b - a`` simplifies to something SymPy
    proves nonnegative (positive for a strict one).
    """
    passed, detail = _identity_outcome(lhs, rhs)
    _report(CheckRecord(_checked_label(label), "identity", description, passed, detail))


def check_close(
    label: str,
    actual: Any,
    expected: Any,
    description: str,
    rtol: float = 1e-7,
    atol: float = 0.0,
) -> None:
    """Check numbers elementwise: ``|actual - expected| <= atol + rtol * |expected|``.

    ``actual`` and ``expected`` are scalars, sequences, numpy arrays or torch tensors of the same
    shape (``expected`` may be a scalar); values are compared in float64, and a NaN never matches.
    """
    passed, detail = _close_outcome(actual, expected, rtol, atol)
    _report(CheckRecord(_checked_label(label), "close", description, passed, detail))


def _checked_label(label: str) -> str:
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"a check needs the label or tag of its equation, got {label!r}")
    return label.strip()


def _identity_outcome(lhs: Any, rhs: Any) -> tuple[bool, str]:
    import sympy as sp

    if rhs is True or rhs is sp.true:
        return _relation_outcome(sp.sympify(lhs))
    return _difference_outcome(sp.sympify(lhs), sp.sympify(rhs))


def _difference_outcome(lhs: Any, rhs: Any) -> tuple[bool, str]:
    """Whether ``lhs - rhs`` is zero: by ``simplify``, else (scalars) by ``identity_holds``."""
    import sympy as sp

    difference = sp.simplify(lhs - rhs)
    detail = f"simplify(lhs - rhs) = {sp.sstr(difference)}"
    if isinstance(difference, sp.MatrixBase):
        return bool(difference.is_zero_matrix), detail
    if difference == 0 or sp.expand(difference) == 0:
        return True, detail
    from ddpm.symbolic import identity_holds

    if identity_holds(lhs, rhs):
        return True, "lhs - rhs = 0 by ddpm.symbolic.identity_holds (simplify leaves it unreduced)"
    return False, detail


def _relation_outcome(relation: Any) -> tuple[bool, str]:
    import sympy as sp

    if relation is sp.true:
        return True, "holds as written"
    if isinstance(relation, sp.Equality):
        return _difference_outcome(relation.lhs, relation.rhs)
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


def _as_float_array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch here
        value = value.detach().cpu()
        value = value.double() if value.is_floating_point() else value
        value = value.numpy()
    return np.asarray(value, dtype=np.float64)


def _close_outcome(actual: Any, expected: Any, rtol: float, atol: float) -> tuple[bool, str]:
    a, e = _as_float_array(actual), _as_float_array(expected)
    if e.ndim > 0 and a.shape != e.shape:
        return False, f"shapes differ: actual {a.shape}, expected {e.shape}"
    e = np.broadcast_to(e, a.shape)
    error = np.abs(a - e)
    allowed = atol + rtol * np.abs(e)
    bad = ~(error <= allowed)  # NaN compares False, so it counts as a mismatch
    tolerance = f"rtol={rtol:g}, atol={atol:g}"
    if not bad.any():
        worst = float(error.max()) if error.size else 0.0
        return True, f"max |actual - expected| = {worst:.3g} ({tolerance}, {error.size} values)"
    excess = np.where(np.isnan(error), np.inf, error - allowed)
    index = np.unravel_index(int(np.argmax(excess)), a.shape) if a.ndim else ()
    where = f" at index {tuple(int(i) for i in index)}" if a.ndim else ""
    return False, (
        f"{int(bad.sum())} of {bad.size} values differ; worst{where}: actual {a[index]:.10g}, "
        f"expected {e[index]:.10g}, |difference| {error[index]:.3g} > allowed "
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
