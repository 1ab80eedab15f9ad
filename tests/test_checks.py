"""ddpm.checks: the checks that book pages attach to equations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
import torch

from ddpm.checks import OUTPUT_KEY, CheckFailed, CheckRecord, check_close, check_identity

x, y = sp.symbols("x y", real=True)
a = sp.symbols("a0:3", real=True)
b = sp.symbols("b0:3", real=True)


def test_identity_that_holds_passes_silently():
    assert check_identity("1", sp.sin(x) ** 2 + sp.cos(x) ** 2, 1, "Pythagoras") is None
    assert check_identity("2", (x + y) ** 2, x**2 + 2 * x * y + y**2, "binomial") is None


def test_false_identity_names_the_equation_and_the_difference():
    with pytest.raises(CheckFailed, match=r"equation \(2\.4\) failed: square: .*= 2\*x\*y"):
        check_identity("2.4", (x + y) ** 2, x**2 + y**2, "square")


def test_identity_with_logarithms_that_simplify_cannot_merge():
    # SymPy does not split log((1 - alpha)(1 - beta)), as it does not know 1 - alpha > 0
    alpha, beta = sp.symbols("alpha beta", positive=True)
    lhs, rhs = sp.log((1 - alpha) * (1 - beta)), sp.log(1 - alpha) + sp.log(1 - beta)
    assert sp.simplify(lhs - rhs) != 0
    check_identity("4.7", lhs, rhs, "the log of a product")
    check_identity("4.7", sp.Eq(lhs, rhs), True, "the log of a product, as an equation")
    with pytest.raises(CheckFailed, match=r"equation \(4\.7\) failed: a false log: simplify"):
        check_identity("4.7", lhs, sp.log(1 - alpha) + sp.log(1 + beta), "a false log")
    with pytest.raises(CheckFailed, match=r"equation \(4\.8\) failed"):
        check_identity("4.8", sp.Eq(lhs, 2 * sp.log(1 - alpha)), True, "a false equation")


def test_matrix_identity():
    m = sp.Matrix([[x, 1], [0, y]])
    check_identity("m", m * m.inv(), sp.eye(2), "a matrix times its inverse")
    with pytest.raises(CheckFailed):
        check_identity("m", m.T, m, "a triangular matrix is not symmetric")


def test_relations_that_must_hold():
    check_identity("eq", sp.Eq(sp.exp(x) * sp.exp(y), sp.exp(x + y)), True, "exp adds")
    # Lagrange's identity makes Cauchy-Schwarz's gap a sum of squares, which SymPy sees is >= 0
    gap = sum((a[i] * b[j] - a[j] * b[i]) ** 2 for i in range(3) for j in range(i + 1, 3))
    check_identity("cs", sp.Ge(gap, 0), True, "Lagrange's sum of squares is nonnegative")
    check_identity("pos", sp.Gt(x**2 + 1, 0), True, "x^2 + 1 > 0")
    with pytest.raises(CheckFailed, match=r"must be > 0"):
        check_identity("neg", sp.Lt(x, x**2), True, "not for x in [0, 1]")


def test_close_on_numpy_torch_and_scalars():
    check_close("c", np.arange(4.0), [0, 1, 2, 3], "lists")
    check_close("c", torch.linspace(0, 1, 5), np.linspace(0, 1, 5), "float32", rtol=1e-6)
    check_close("c", math.pi, np.pi, "scalar")
    check_close("c", np.full((2, 3), 0.5), 0.5, "scalar expected broadcasts")


def test_close_reports_the_worst_value():
    actual = np.array([1.0, 2.0, 3.5])
    with pytest.raises(CheckFailed) as failure:
        check_close("3.1", actual, [1.0, 2.0, 3.0], "tables", rtol=1e-3)
    message = str(failure.value)
    assert "equation (3.1) failed: tables" in message
    assert "1 of 3 values differ; worst at index (2,): actual 3.5, expected 3" in message


def test_close_fails_on_nan_and_on_shape_mismatch():
    with pytest.raises(CheckFailed, match="1 of 2 values differ"):
        check_close("n", [1.0, float("nan")], [1.0, 1.0], "nan", atol=1.0)
    with pytest.raises(CheckFailed, match=r"shapes differ: actual \(3,\), expected \(2,\)"):
        check_close("s", np.zeros(3), np.zeros(2), "shapes")


def test_a_check_needs_a_label():
    with pytest.raises(ValueError, match="label or tag"):
        check_close(" ", 1, 1, "no label")


def test_record_renders_a_badge_and_carries_itself_in_the_output_metadata():
    record = CheckRecord("2.3", "close", "a <table>", True, "max |actual - expected| = 0")
    data, metadata = record._repr_mimebundle_()
    assert data["text/plain"].startswith("\u2713 check of equation (2.3) holds: a <table>")
    assert "ddpm-check-passed" in data["text/html"] and "a &lt;table&gt;" in data["text/html"]
    assert metadata[OUTPUT_KEY] == {
        "label": "2.3",
        "kind": "close",
        "description": "a <table>",
        "passed": True,
        "detail": "max |actual - expected| = 0",
    }
