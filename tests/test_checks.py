"""ddpm.checks: shown equations, checks with two independent sides, and mutants they reject."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
import torch

from ddpm.checks import (
    EQUATION_KEY,
    OUTPUT_KEY,
    CheckFailed,
    CheckRecord,
    Equation,
    MutantRecord,
    check_close,
    check_holds,
    check_identity,
)
from ddpm.symbolic.notation import Normal, bold, density, given, sym

x, y = sp.symbols("x y", real=True)
alpha, beta = sp.symbols("alpha beta", positive=True)
SQUARE = Equation("2.4", sp.Eq((x + y) ** 2, x**2 + 2 * x * y + y**2, evaluate=False))
DERIVED = "derivation: the product (x + y)(x + y) multiplied out"


def identity(equation, claim, against, mutants, **kwargs):
    return check_identity(
        equation, claim, against, "test", against_from=DERIVED, mutants=mutants, **kwargs
    )


def test_identity_that_holds_and_rejects_its_mutant_passes():
    product = sp.expand((x + y) * (x + y))
    assert identity(SQUARE, SQUARE.rhs, product, {"no cross term": x**2 + y**2}) is None


def test_false_claim_names_the_equation_and_the_difference():
    wrong = Equation("2.4", sp.Eq((x + y) ** 2, x**2 + y**2, evaluate=False))
    with pytest.raises(CheckFailed, match=r"equation \(2\.4\) failed: test: .*= -2\*x\*y"):
        identity(wrong, wrong.rhs, sp.expand((x + y) ** 2), {"sign": x**2 - y**2})


def test_a_mutant_that_passes_fails_the_check():
    # the left side is the claim written another way: the check cannot tell it apart, so it fails
    with pytest.raises(CheckFailed, match=r"mutant not rejected .*\['the left side'\]"):
        identity(
            SQUARE,
            SQUARE.rhs,
            sp.expand((x + y) ** 2),
            {"the left side": (x + y) ** 2},
        )


def test_a_check_needs_mutants_sources_and_two_different_sides():
    product = sp.expand((x + y) * (x + y))
    with pytest.raises(ValueError, match="at least one mutant"):
        identity(SQUARE, SQUARE.rhs, product, {})
    numbers = np.arange(3.0)
    with pytest.raises(ValueError, match="same object"):
        check_close(
            SQUARE,
            numbers,
            numbers,
            "t",
            claim_from="package: p",
            against_from=DERIVED,
            mutants={"m": numbers + 1},
        )
    with pytest.raises(ValueError, match="kind one of"):
        check_identity(SQUARE, SQUARE.rhs, product, "t", against_from="my head", mutants={"m": x})
    with pytest.raises(ValueError, match="both sides come from"):
        check_identity(
            SQUARE,
            SQUARE.rhs,
            product,
            "t",
            against_from="shown: equation (2.4)",
            mutants={"m": x},
        )
    with pytest.raises(ValueError, match="is the claim itself"):
        identity(SQUARE, SQUARE.rhs, product, {"m": SQUARE.rhs})
    with pytest.raises(TypeError, match="takes the Equation"):
        identity("2.4", SQUARE.rhs, product, {"m": x})


def test_the_claim_must_be_part_of_the_shown_equation_unless_sourced():
    with pytest.raises(ValueError, match="not a part of the shown equation"):
        identity(SQUARE, x**2 + y**2 + 2 * x * y + 0 * x + x, sp.expand((x + y) ** 2), {"m": x})
    identity(
        SQUARE,
        sp.expand((x + y) ** 2),
        x * (x + y) + y * (x + y),
        {"m": x**2},
        claim_from="derivation: expanded by SymPy",
    )


def test_logarithms_that_simplify_cannot_merge():
    # SymPy does not split log((1 - alpha)(1 - beta)), as it does not know 1 - alpha > 0
    eq = Equation("4.7", sp.Eq(sp.log((1 - alpha) * (1 - beta)), sp.Symbol("L"), evaluate=False))
    lhs, rhs = eq.lhs, sp.log(1 - alpha) + sp.log(1 - beta)
    assert sp.simplify(lhs - rhs) != 0
    identity(eq, lhs, rhs, {"a sign": sp.log(1 - alpha) + sp.log(1 + beta)})


def test_notation_compares_argument_by_argument():
    xt, x0, identity_matrix = bold("x", "t"), bold("x", "0"), sym(r"\mathbf{I}", commutative=False)
    abar = sym(r"\bar\alpha_t", positive=True)
    q = density("q")
    eq = Equation(
        "2.3",
        sp.Eq(
            q(given(xt, x0)),
            Normal(xt, sp.sqrt(abar) * x0, (1 - abar) * identity_matrix),
            evaluate=False,
        ),
    )
    assert r"q\left({\mathbf{x}_{t}} \mid {\mathbf{x}_{0}}\right)" in eq.latex
    assert r"\left(1 - {\bar\alpha_t}\right) {\mathbf{I}}" in eq.latex and eq.latex.endswith(
        r"\tag{2.3}"
    )
    derived = Normal(xt, sp.sqrt(abar) * x0, (2 - abar - 1) * identity_matrix)
    identity(eq, eq.rhs, derived, {"abar for 1 - abar": Normal(xt, sp.sqrt(abar) * x0, abar)})
    with pytest.raises(CheckFailed, match="Normal: "):
        identity(eq, eq.rhs, Normal(xt, abar * x0, (1 - abar)), {"m": Normal(xt, x0, 1)})


def test_relations_that_must_hold():
    a, b = sp.symbols("a0:3", real=True), sp.symbols("b0:3", real=True)
    gap = sum((a[i] * b[j] - a[j] * b[i]) ** 2 for i in range(3) for j in range(i + 1, 3))
    eq = Equation("cs", sp.Ge(gap, 0))
    identity(eq, eq.relations[0], True, {"reversed": sp.Lt(gap, 0)})
    strict = Equation("lt", sp.Lt(x, x**2))
    with pytest.raises(CheckFailed, match=r"must be > 0"):
        identity(strict, strict.relations[0], True, {"m": sp.Gt(x, x**2)})


def test_close_evaluates_the_shown_expression_at_values():
    n = sp.Symbol("n", positive=True, integer=True)
    eq = Equation("5", sp.Eq(sp.Symbol("S_n"), n * (n + 1) / 2, evaluate=False))
    terms = np.arange(1, 30)
    check_close(
        eq,
        eq.rhs,
        np.cumsum(terms),
        "running sums",
        at={n: terms},
        against_from="exact: running sums",
        mutants={"n - 1": n * (n - 1) / 2},
        rtol=0,
    )
    with pytest.raises(ValueError, match="no value given"):
        check_close(eq, eq.rhs, 1, "t", at={}, against_from="exact: e", mutants={"m": n})


def test_close_on_numpy_torch_and_scalars_with_a_numeric_claim():
    eq = Equation("c", sp.Eq(sp.Symbol("c"), 1, evaluate=False))
    for claim, against, rtol in [
        (np.arange(4.0), [0, 1, 2, 3], 0),
        (torch.linspace(0, 1, 5), np.linspace(0, 1, 5), 1e-6),
        (math.pi, np.pi, 0),
    ]:
        check_close(
            eq,
            claim,
            against,
            "numbers",
            claim_from="package: a function",
            against_from="reference: numpy",
            mutants={"off by one": np.asarray(against, dtype=float) + 1},
            rtol=rtol,
        )
    with pytest.raises(ValueError, match="needs claim_from"):
        check_close(eq, 1.0, 1.0, "t", against_from="exact: e", mutants={"m": 2.0})


def test_close_reports_the_worst_value_and_fails_on_nan_and_shapes():
    eq = Equation("3.1", sp.Eq(sp.Symbol("c"), 1, evaluate=False))
    kwargs = {"claim_from": "package: p", "against_from": "exact: e", "mutants": {"m": [9.0]}}
    with pytest.raises(CheckFailed) as failure:
        check_close(eq, np.array([1.0, 2.0, 3.5]), [1.0, 2.0, 3.0], "tables", rtol=1e-3, **kwargs)
    assert "1 of 3 values differ; worst at index (2,): claim 3.5, other 3" in str(failure.value)
    with pytest.raises(CheckFailed, match="1 of 2 values differ"):
        check_close(eq, [1.0, float("nan")], [1.0, 1.0], "nan", atol=1.0, **kwargs)
    with pytest.raises(CheckFailed, match=r"shapes differ: claim \(3,\), other \(2,\)"):
        check_close(eq, np.zeros(3), np.zeros(2), "shapes", **kwargs)


def test_holds_checks_a_relation_elementwise_and_rejects_the_reversed_one():
    lhs_symbol, rhs_symbol = sp.symbols("nll bound")
    eq = Equation("4.1", sp.Le(lhs_symbol, rhs_symbol))
    at = {lhs_symbol: np.array([1.0, 2.0]), rhs_symbol: np.array([1.5, 2.0])}
    check_holds(
        eq,
        eq.relations[0],
        "a bound",
        at=at,
        against_from="exact: values",
        mutants={"reversed": sp.Gt(lhs_symbol, rhs_symbol)},
    )
    with pytest.raises(CheckFailed, match="1 of 2 values violate"):
        check_holds(
            eq,
            eq.relations[0],
            "a bound",
            at={lhs_symbol: np.array([1.0, 3.0]), rhs_symbol: 2.0},
            against_from="exact: values",
            mutants={"reversed": sp.Gt(lhs_symbol, rhs_symbol)},
        )


def test_equation_shows_its_latex_with_its_tag_and_carries_its_record():
    eq = Equation("7", sp.Eq(x, 2 * y, evaluate=False), sp.Le(y, 1), paper=("4", "Algorithm 1"))
    data, metadata = eq._repr_mimebundle_()
    assert data["text/latex"] == "$$\n" + eq.latex + "\n$$"
    assert eq.latex.startswith("\\begin{aligned}\nx &= 2 y \\\\\ny &\\le 1\n\\end{aligned}")
    record = metadata[EQUATION_KEY]
    assert record["label"] == "7" and record["paper"] == ["4", "Algorithm 1"]
    assert record["definition"] is False and len(record["srepr"]) == 2
    with pytest.raises(ValueError, match="needs a label"):
        Equation(" ", x)


def test_record_renders_a_badge_and_carries_itself_in_the_output_metadata():
    mutant = MutantRecord("sign", True, "differs")
    record = CheckRecord(
        "2.3", "close", "a <table>", True, "max 0", "shown: (2.3)", "package: t", True, (mutant,)
    )
    data, metadata = record._repr_mimebundle_()
    assert data["text/plain"].startswith("\u2713 check of equation (2.3) holds: a <table>")
    assert "ddpm-check-passed" in data["text/html"] and "a &lt;table&gt;" in data["text/html"]
    assert "1 of 1 mutants rejected" in data["text/html"]
    assert list(metadata[OUTPUT_KEY]["mutants"]) == [
        {"description": "sign", "rejected": True, "detail": "differs"}
    ]
    assert metadata[OUTPUT_KEY]["claim_from"] == "shown: (2.3)"


def test_close_evaluates_sums_over_indexed_values_and_operators_as_wholes():
    n, k = sp.symbols("n k", integer=True, positive=True)
    a = sp.IndexedBase("a")
    total = sp.Sum(a[k] ** 2, (k, 0, n - 1))
    eq = Equation("s", sp.Eq(sp.Symbol("S"), total, evaluate=False))
    values = np.array([1.0, 2.0, 3.0])
    check_close(
        eq,
        total,
        14.0,
        "a sum of squares",
        at={n: 3, a: values},  # an int bounds the Sum; a's entries are read from the array
        against_from="exact: 1 + 4 + 9",
        mutants={"no square": sp.Sum(a[k], (k, 0, n - 1))},
    )
    var_x = sp.Function("Var")(x)
    ratio = Equation("v", sp.Eq(sp.Symbol("r"), var_x / 2, evaluate=False))
    check_close(
        ratio,
        var_x / 2,
        1.5,
        "an operator stands for its value",
        at={var_x: 3.0},
        against_from="exact: 3 / 2",
        mutants={"not halved": var_x},
    )
