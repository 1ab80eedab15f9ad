"""SymPy derivations of the formulas DDPM (Ho, Jain & Abbeel 2020) rests on.

Each ``derive_*`` function works a result out rather than stating it: Gaussian facts come from
integrals (moment generating functions, moments, the KL integral), the marginal q(x_t | x_0) from
composing the kernel with a Gaussian and solving the recursion, the posterior from completing the
square in x_{t-1}, and Cauchy-Schwarz from expanding Lagrange's identity. Each returns a NamedTuple
whose ``steps`` are ``Step(description, expr)`` pairs a book page can show one by one with
``sympy.latex``, followed by the results, which the tests compare with the paper's closed forms
and, through :func:`schedule_tables_numeric`, with the float64 tables of :mod:`ddpm.schedule`.

Symbols live in :data:`SYMBOLS`. Two-timestep results are written in ``alpha_t`` and
``alpha_bar_{t-1}`` only (beta_t = 1 - alpha_t, alpha_bar_t = alpha_t alpha_bar_{t-1}), which lets
square roots split; :func:`paper_notation` rewrites an expression in beta_t and alpha_bar_t for
display. :func:`identity_holds` is the identity test every check here goes through.

Modules: ``algebra`` (symbols, steps, completing the square, expectations, identity check),
``gaussians``, ``forward`` (Eq. 4 and the x_0 / eps / v / score relations), ``posterior``
(Eqs. 6-7, 11, 12), ``inequalities`` (Cauchy-Schwarz), ``numeric`` (float64 tables), ``display``
(:func:`show_steps`, a derivation's steps on a book page).
"""

from ddpm.symbolic.algebra import (
    SYMBOLS,
    CompletedSquare,
    PaperSymbols,
    Step,
    complete_square,
    expectation,
    gaussian_log_pdf,
    gaussian_pdf,
    identity_holds,
    paper_notation,
    standard_normal_moments,
)
from ddpm.symbolic.display import show_steps
from ddpm.symbolic.forward import (
    MarginalStepDerivation,
    ParameterisationRelations,
    UnrolledMarginal,
    derive_marginal_step,
    derive_parameterisations,
    unroll_marginal,
)
from ddpm.symbolic.gaussians import (
    GaussianProductDerivation,
    KLDerivation,
    LinearCombinationDerivation,
    ReparameterisationDerivation,
    derive_gaussian_kl,
    derive_gaussian_product,
    derive_linear_combination,
    derive_reparameterisation,
    gaussian_kl,
)
from ddpm.symbolic.inequalities import (
    CauchySchwarzDerivation,
    CorrelationDerivation,
    LagrangeGeneral,
    derive_cauchy_schwarz,
    derive_lagrange_general,
    derive_xt_x0_correlation,
    write_out_sums,
)
from ddpm.symbolic.numeric import SymbolicTables, schedule_tables_numeric
from ddpm.symbolic.posterior import (
    EpsMeanDerivation,
    LossWeightDerivation,
    PosteriorDerivation,
    derive_eps_loss_weight,
    derive_eps_mean,
    derive_posterior,
)

__all__ = [
    "SYMBOLS",
    "CauchySchwarzDerivation",
    "CompletedSquare",
    "CorrelationDerivation",
    "EpsMeanDerivation",
    "GaussianProductDerivation",
    "KLDerivation",
    "LagrangeGeneral",
    "LinearCombinationDerivation",
    "LossWeightDerivation",
    "MarginalStepDerivation",
    "PaperSymbols",
    "ParameterisationRelations",
    "PosteriorDerivation",
    "ReparameterisationDerivation",
    "Step",
    "SymbolicTables",
    "UnrolledMarginal",
    "complete_square",
    "derive_cauchy_schwarz",
    "derive_eps_loss_weight",
    "derive_eps_mean",
    "derive_gaussian_kl",
    "derive_gaussian_product",
    "derive_lagrange_general",
    "derive_linear_combination",
    "derive_marginal_step",
    "derive_parameterisations",
    "derive_posterior",
    "derive_reparameterisation",
    "derive_xt_x0_correlation",
    "expectation",
    "gaussian_kl",
    "gaussian_log_pdf",
    "gaussian_pdf",
    "identity_holds",
    "paper_notation",
    "schedule_tables_numeric",
    "show_steps",
    "standard_normal_moments",
    "unroll_marginal",
    "write_out_sums",
]
