"""Densities: sampling contract, exact mixture scores and log-densities, user-data validation.

Oracles: central finite differences of the exact log-density (scores), numerical integration on a
grid (normalisation, expectations) against Monte Carlo from the forward marginal
``x_t = alpha x_0 + sigma z`` simulated from data samples.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from geoflow.densities import (
    DENSITY_NAMES,
    MAX_POINTS,
    MIN_POINTS,
    GaussianMixture,
    PointCloud,
    get_density,
    load_density,
    mixture_from_spec,
    read_points_csv,
)
from geoflow.sde import VESDE, VPSDE

SDES = [VPSDE(), VESDE()]
MIXTURES = [n for n in DENSITY_NAMES if get_density(n).has_exact_score]


def _mixture(name: str) -> GaussianMixture:
    """A named mixture, or the extra ones: a 3-D mixture and a small point cloud."""
    if name == "three_d":
        return GaussianMixture(
            [0.6, 0.4],
            [[0.5, -1.0, 0.2], [-1.0, 0.5, 1.0]],
            [np.diag([0.3, 0.2, 0.5]), [[0.4, 0.1, 0.0], [0.1, 0.3, -0.05], [0.0, -0.05, 0.2]]],
        )
    if name == "point_cloud":
        pts = torch.randn(20, 2, generator=torch.Generator().manual_seed(5)).double().numpy()
        return PointCloud(pts)
    d = get_density(name)
    assert isinstance(d, GaussianMixture)
    return d


ALL_MIXTURES = [*MIXTURES, "three_d", "point_cloud"]


# --------------------------------------------------------------------------- sampling contract
def test_at_least_ten_named_densities_including_the_required_ones():
    required = {"eight_gaussians", "grid25", "asymmetric", "two_moons", "circles", "swiss_roll"}
    required |= {"checkerboard", "pinwheel", "two_spirals"}
    assert len(DENSITY_NAMES) >= 10
    assert required <= set(DENSITY_NAMES)
    assert {"eight_gaussians", "grid25", "asymmetric"} <= set(MIXTURES)


@pytest.mark.parametrize("name", DENSITY_NAMES)
def test_sample_shape_dtype_and_determinism(name):
    d = get_density(name)
    a = d.sample(500, generator=torch.Generator().manual_seed(7))
    b = d.sample(500, generator=torch.Generator().manual_seed(7))
    c = d.sample(500, generator=torch.Generator().manual_seed(8))
    assert a.shape == (500, 2) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.isfinite(a).all()
    lo, hi = d.bounds()
    # the plotting window holds essentially all of the data
    inside = ((a >= lo) & (a <= hi)).all(1).float().mean().item()
    assert inside > 0.99


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_sample_count_is_validated(bad):
    with pytest.raises(ValueError, match="positive integer"):
        get_density("two_moons").sample(bad)


def test_unknown_density_lists_valid_names():
    with pytest.raises(ValueError) as e:
        get_density("nine_gaussians")
    for n in DENSITY_NAMES:
        assert n in str(e.value)
    with pytest.raises(ValueError, match="eight_gaussians"):
        load_density("nine_gaussians")


# --------------------------------------------------------------------------- exact scores
def _fd_score(mix: GaussianMixture, x: torch.Tensor, t, sde, h: float = 1e-5) -> torch.Tensor:
    """Central finite differences of the exact log-density, one coordinate at a time."""
    cols = []
    for j in range(x.shape[1]):
        e = torch.zeros_like(x)
        e[:, j] = h
        cols.append((mix.log_prob(x + e, t, sde) - mix.log_prob(x - e, t, sde)) / (2 * h))
    return torch.stack(cols, 1)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: s.name)
@pytest.mark.parametrize("name", ALL_MIXTURES)
def test_exact_score_matches_finite_differences(name, sde):
    mix = _mixture(name)
    g = torch.Generator().manual_seed(0)
    for t in (None, 1e-3, 0.05, 0.3, 0.7, 1.0):
        # points near the data and between modes (where the score changes fastest)
        a = 1.0 if t is None else float(sde.alpha(t))
        s = 0.0 if t is None else float(sde.sigma(t))
        x = (
            a * mix.sample(64, generator=g).double()
            + (s + 0.3) * torch.randn(64, mix.dim, generator=g).double()
        )
        score = mix.score(x, t, sde)
        fd = _fd_score(mix, x, t, sde)
        assert score.shape == x.shape and score.dtype == torch.float64
        scale = 1.0 + fd.abs().max()
        assert torch.allclose(score, fd, atol=1e-5 * scale, rtol=1e-5), (name, sde.name, t)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: s.name)
@pytest.mark.parametrize("name", ["asymmetric", "three_d", "point_cloud"])
def test_per_sample_times_match_scalar_times(name, sde):
    mix = _mixture(name)
    g = torch.Generator().manual_seed(1)
    x = 2.0 * torch.randn(12, mix.dim, generator=g).double()
    t = torch.linspace(0.01, 1.0, 12, dtype=torch.float64)
    score, logp = mix.score(x, t, sde), mix.log_prob(x, t, sde)
    for i in range(12):
        ti = float(t[i])
        assert torch.allclose(score[i], mix.score(x[i : i + 1], ti, sde)[0], atol=1e-10, rtol=1e-10)
        assert torch.allclose(logp[i], mix.log_prob(x[i : i + 1], ti, sde)[0], atol=1e-10, rtol=1e-10)
    # per-sample times against finite differences too
    assert torch.allclose(score, _fd_score(mix, x, t, sde), atol=1e-5 * (1 + score.abs().max()), rtol=1e-5)
    with pytest.raises(ValueError, match="shape"):
        mix.score(x, t[:5], sde)


def test_score_fn_takes_batched_time_and_keeps_float32():
    mix, sde = _mixture("eight_gaussians"), VPSDE()
    x = torch.randn(10, 2, generator=torch.Generator().manual_seed(2))
    out = mix.score_fn(sde)(x, torch.full((10,), 0.4, dtype=torch.float64))
    assert out.shape == (10, 2) and out.dtype == torch.float32
    assert torch.allclose(out.double(), mix.score(x.double(), 0.4, sde), atol=1e-5)


def test_marginal_at_late_time_is_close_to_the_prior():
    """VP: the marginal at T is almost N(0, I); VE: almost N(0, sigma_max^2 I)."""
    mix = _mixture("eight_gaussians")
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(3)).double()
    vp = VPSDE()
    assert torch.allclose(mix.score(x, 1.0, vp), -x, atol=0.03 * (1 + x.abs().max()))
    ve = VESDE()
    m, c = mix.marginal_params(1.0, ve)
    assert torch.allclose(m, mix.means)
    assert torch.allclose(c, mix.covs + ve.sigma_max**2 * torch.eye(2, dtype=torch.float64))


# --------------------------------------------------------------------------- log-densities vs Monte Carlo
def _grid(mix: GaussianMixture, t, sde, n: int = 201) -> tuple[torch.Tensor, float]:
    """A square grid covering the marginal at t (8 standard deviations), with its cell area."""
    m, c = mix.marginal_params(t, sde)
    r = float(m.abs().max() + 8 * torch.linalg.eigvalsh(c).max().sqrt())
    u = torch.linspace(-r, r, n, dtype=torch.float64)
    xx, yy = torch.meshgrid(u, u, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], 1), float((u[1] - u[0]) ** 2)


TEST_FUNCTIONS = {
    "x>0.3": lambda x: (x[:, 0] > 0.3).double(),
    "quadrant": lambda x: ((x[:, 0] < 0) & (x[:, 1] > 0)).double(),
    "bump": lambda x: torch.exp(-0.5 * ((x - torch.tensor([1.0, 0.5], dtype=x.dtype)) ** 2).sum(1)),
    "cos": lambda x: torch.cos(1.3 * x[:, 0]) * torch.sin(0.7 * x[:, 1] + 0.2),
}


@pytest.mark.parametrize("sde", SDES, ids=lambda s: s.name)
@pytest.mark.parametrize("name", MIXTURES)
def test_log_prob_integrates_to_one_and_matches_monte_carlo(name, sde):
    """E_p[f] by quadrature of exp(log_prob) equals the Monte Carlo mean over simulated x_t."""
    mix = _mixture(name)
    g = torch.Generator().manual_seed(4)
    n = 20000
    for t in (None, 0.05, 0.4):
        grid, area = _grid(mix, t, sde)
        dens = torch.exp(mix.log_prob(grid, t, sde))
        assert abs(float(dens.sum()) * area - 1.0) < 1e-3, (name, sde.name, t)
        x0 = mix.sample(n, generator=g).double()
        xt = x0 if t is None else sde.marginal_sample(x0, t, generator=g)
        for fname, f in TEST_FUNCTIONS.items():
            exact = float((f(grid) * dens).sum()) * area
            vals = f(xt)
            se = float(vals.std()) / math.sqrt(n)
            # 5 standard errors: a wrong weight, mean or covariance moves these by far more
            assert abs(float(vals.mean()) - exact) < 5 * se + 1e-3, (name, sde.name, t, fname)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: s.name)
def test_marginal_mixture_moments_match_simulation(sde):
    """Mean and covariance of the simulated marginal equal the marginal mixture's moments (3-D)."""
    mix = _mixture("three_d")
    g = torch.Generator().manual_seed(6)
    x0 = mix.sample(40000, generator=g).double()
    for t in (0.1, 0.5):
        xt = sde.marginal_sample(x0, t, generator=g)
        marg = mix.marginal(t, sde)
        w = marg.weights
        mean = (w[:, None] * marg.means).sum(0)
        second = (w[:, None, None] * (marg.covs + marg.means[:, :, None] * marg.means[:, None, :])).sum(0)
        cov = second - mean[:, None] * mean[None, :]
        scale = float(torch.linalg.eigvalsh(cov).max())
        assert torch.allclose(xt.mean(0), mean, atol=0.03 * math.sqrt(scale))
        assert torch.allclose(torch.cov(xt.T), cov, atol=0.03 * scale)


# --------------------------------------------------------------------------- user data: CSV
def test_read_points_csv_accepts_header_and_separators(tmp_path):
    rows = "\n".join(f"{i * 0.1:.3f},{-i * 0.2:.3f}" for i in range(12))
    pts = read_points_csv(("x,y\n" + rows + "\n").encode())
    assert pts.shape == (12, 2) and pts.dtype == np.float64
    assert pts[3, 0] == pytest.approx(0.3) and pts[3, 1] == pytest.approx(-0.6)
    p = tmp_path / "pts.csv"
    p.write_text(rows.replace(",", ";"))
    assert np.array_equal(read_points_csv(p), pts)
    assert np.array_equal(read_points_csv(io.StringIO(rows.replace(",", "\t"))), pts)
    d = load_density(str(p))
    assert isinstance(d, PointCloud) and d.sample(5).shape == (5, 2)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("\n".join(["1,2,3"] * 12), "2 columns"),
        ("\n".join(["1"] * 12), "2 columns"),
        ("x,y\n" + "\n".join(["1,2"] * 5 + ["1,abc"] + ["1,2"] * 6), "line 7: non-numeric"),
        ("\n".join(["1,2"] * 5 + ["nan,2"] + ["1,2"] * 6), "line 6: NaN or infinite"),
        ("\n".join(["1,2"] * 5 + ["1,inf"] + ["1,2"] * 6), "NaN or infinite"),
        ("x,y\n" + "\n".join(["1,2"] * (MIN_POINTS - 1)), f"at least {MIN_POINTS} points"),
        ("", "empty"),
    ],
)
def test_read_points_csv_rejects_bad_input(text, match):
    with pytest.raises(ValueError, match=match):
        read_points_csv(text.encode())


def test_point_arrays_are_validated():
    good = np.random.default_rng(0).normal(size=(30, 2))
    assert PointCloud(good).dim == 2
    for bad, match in [
        (good[:, :1], "2 columns"),
        (np.concatenate([good, good], 1), "2 columns"),
        (good[: MIN_POINTS - 1], f"at least {MIN_POINTS}"),
        (np.where(np.arange(60).reshape(30, 2) == 7, np.nan, good), "NaN or infinite"),
        ([["a", "b"]] * 20, "only numbers"),
    ]:
        with pytest.raises(ValueError, match=match):
            PointCloud(bad)
    with pytest.raises(ValueError, match="bandwidth"):
        PointCloud(good, bandwidth=-1.0)
    with pytest.raises(ValueError, match="does not exist"):
        load_density("/nonexistent/points.csv")
    with pytest.raises(ValueError, match="does not exist"):
        read_points_csv("/nonexistent/points.csv")


def test_very_large_point_cloud_is_capped_with_a_message():
    pts = np.random.default_rng(1).normal(size=(1_000_000, 2))
    with pytest.warns(UserWarning, match=str(MAX_POINTS)):
        d = PointCloud(pts)
    assert d.points.shape == (MAX_POINTS, 2)
    assert "1000000" in d.message and str(MAX_POINTS) in d.message
    # the capped density still samples and scores
    x = d.sample(100, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(d.score(x, 0.1, VPSDE())).all()


def test_large_csv_is_read_and_capped(tmp_path):
    n = 100_000
    p = tmp_path / "big.csv"
    rng = np.random.default_rng(2)
    np.savetxt(p, rng.normal(size=(n, 2)), delimiter=",", header="x,y", comments="", fmt="%.5f")
    with pytest.warns(UserWarning, match="subset"):
        d = load_density(str(p))
    assert d.points.shape == (MAX_POINTS, 2)


# --------------------------------------------------------------------------- user data: JSON spec
GOOD_SPEC = {
    "weights": [0.3, 0.7],
    "means": [[0, 0], [1, 2]],
    "covs": [[[1, 0.2], [0.2, 0.5]], np.eye(2).tolist()],
}


def test_mixture_from_spec_dict_string_and_file(tmp_path):
    import json

    a = mixture_from_spec(GOOD_SPEC)
    b = mixture_from_spec(json.dumps(GOOD_SPEC))
    p = tmp_path / "mine.json"
    p.write_text(json.dumps(GOOD_SPEC))
    c = load_density(str(p))
    assert isinstance(c, GaussianMixture) and c.name == "mine"
    for m in (b, c):
        assert torch.equal(m.weights, a.weights) and torch.equal(m.covs, a.covs)
    assert mixture_from_spec(a.to_spec()).to_spec() == a.to_spec()


def _spec(**over):
    s = {k: v for k, v in GOOD_SPEC.items()}
    s.update(over)
    return s


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (_spec(covs=[[[1, 2], [2, 1]], np.eye(2).tolist()]), "covariance 0 is not positive definite"),
        (_spec(covs=[np.eye(2).tolist(), [[0, 0], [0, 1]]]), "covariance 1 is not positive definite"),
        (_spec(covs=[[[1, 0.5], [0, 1]], np.eye(2).tolist()]), "symmetric"),
        (_spec(weights=[0.3, 0.6]), "sum to 1"),
        (_spec(weights=[1.2, -0.2]), "positive"),
        (_spec(means=[[0, 0], [1, 2], [3, 3]]), "means must be a list of 2 points"),
        (_spec(means=[[0, 0, 1], [1, 2, 1]]), r"\[x, y\]"),
        (_spec(covs=[np.eye(2).tolist()]), "covs must have shape"),
        (_spec(weights=[0.5, "a"]), "only numbers"),
        (_spec(means=[[0, float("nan")], [1, 2]]), "NaN or infinite"),
        ({"weights": [1.0], "means": [[0, 0]]}, "lacks covs"),
        ('{"weights": [1.0], "means": [[0, 0]], "covs": ', "not valid JSON"),
        ("[1, 2]", "does not exist"),
    ],
)
def test_mixture_spec_validation_names_the_problem(spec, match):
    with pytest.raises(ValueError, match=match):
        mixture_from_spec(spec)


def test_unknown_density_file_kind_is_rejected():
    with pytest.raises(ValueError, match=r"\.json mixture spec"):
        load_density("data.txt")
