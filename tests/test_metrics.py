"""Quality metrics against closed forms: Gaussian entropy and KL, Bures-Wasserstein W2, translations.

Also the W2 path tools (W2 along paths, path length, McCann's geodesic) against POT's exact W2, and
the classifier-feature Fréchet distance of image samples.

Finite-sample tolerances are derived from the estimators' spread (or measured floors), not tuned.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import linalg

from geoflow import wgf
from geoflow.checkpoints import load_pretrained
from geoflow.densities import get_density
from geoflow.images import IMAGE_SETS, image_shape, load_image_set
from geoflow.metrics import (
    exact_w2,
    frechet_distance,
    frechet_from_features,
    image_quality,
    kl_knn,
    knn_entropy,
    mccann_geodesic,
    path_length,
    sliced_w2,
    summarize,
    w2_along,
    w2_steps,
)
from geoflow.nets import Classifier, ClassifierConfig
from geoflow.sde import VPSDE

M1, C1 = np.array([0.5, -1.0]), np.array([[1.0, 0.4], [0.4, 0.5]])
M2, C2 = np.array([1.5, 0.5]), np.array([[0.6, -0.2], [-0.2, 1.2]])
SDE = VPSDE()


def _gauss(m: np.ndarray, c: np.ndarray, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).multivariate_normal(m, c, size=n)


def _gauss_logpdf(m: np.ndarray, c: np.ndarray):
    prec, logdet = np.linalg.inv(c), np.linalg.slogdet(c)[1]
    d = len(m)

    def fn(x: torch.Tensor) -> torch.Tensor:
        diff = x.numpy() - m
        return torch.from_numpy(
            -0.5 * (np.einsum("ni,ij,nj->n", diff, prec, diff) + logdet + d * math.log(2 * math.pi))
        )

    return fn


def gaussian_entropy(c: np.ndarray) -> float:
    return 0.5 * float(np.linalg.slogdet(2 * math.pi * math.e * c)[1])


def gaussian_kl(m1, c1, m2, c2) -> float:
    """KL(N(m1, c1) || N(m2, c2))."""
    p2 = np.linalg.inv(c2)
    dm = m2 - m1
    d = len(m1)
    return 0.5 * float(
        np.trace(p2 @ c1) + dm @ p2 @ dm - d + np.linalg.slogdet(c2)[1] - np.linalg.slogdet(c1)[1]
    )


def bures_w2(m1, c1, m2, c2) -> float:
    r2 = linalg.sqrtm(c2)
    cross = np.real(linalg.sqrtm(r2 @ c1 @ r2))
    return math.sqrt(float(np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * cross)))


# --------------------------------------------------------------------------- entropy and KL
@pytest.mark.parametrize("dim", [1, 2, 3])
def test_knn_entropy_of_a_gaussian(dim):
    rng = np.random.default_rng(dim)
    a = rng.normal(size=(dim, dim))
    c = a @ a.T + 0.3 * np.eye(dim)
    x = _gauss(np.zeros(dim), c, 10000, seed=10 + dim)
    # the Kozachenko-Leonenko estimator's spread at n = 10000 is about 0.01 nats
    assert knn_entropy(x) == pytest.approx(gaussian_entropy(c), abs=0.04)
    assert knn_entropy(torch.from_numpy(x)) == pytest.approx(knn_entropy(x))


def test_kl_knn_between_gaussians():
    q = _gauss(M1, C1, 10000, seed=1)
    for m, c in ((M2, C2), (M1 + np.array([0.3, 0.0]), C1), (M1, C1)):
        logp = _gauss_logpdf(m, c)
        exact = gaussian_kl(M1, C1, m, c)
        # two error sources: the k-NN entropy (about 0.01 nats here) and the Monte Carlo mean of
        # log p, whose standard error is measured from the same samples
        se = float(logp(torch.from_numpy(q)).std()) / math.sqrt(len(q))
        assert kl_knn(q, logp) == pytest.approx(exact, abs=0.03 + 4 * se), (m, c)
    assert gaussian_kl(M1, C1, M2, C2) > 1.0


def test_knn_entropy_rejects_degenerate_input():
    with pytest.raises(ValueError, match="more than k"):
        knn_entropy(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="duplicate"):
        knn_entropy(np.zeros((50, 2)))


# --------------------------------------------------------------------------- W2
def test_exact_w2_of_a_translation_is_the_shift():
    x = np.random.default_rng(2).normal(size=(60, 2))
    v = np.array([0.7, -1.2])
    perm = np.random.default_rng(3).permutation(60)
    assert exact_w2(x, (x + v)[perm]) == pytest.approx(float(np.linalg.norm(v)), rel=1e-9)
    assert exact_w2(x, x) == pytest.approx(0.0, abs=1e-12)


def test_exact_w2_hand_checked_cases():
    # two points moved up by 1
    assert exact_w2(np.array([[0.0, 0.0], [1.0, 0.0]]), np.array([[1.0, 1.0], [0.0, 1.0]])) == pytest.approx(
        1.0
    )
    # {0, 2} to {1, 5} on a line: the monotone coupling costs (1 + 9) / 2
    a = np.array([[0.0, 0.0], [2.0, 0.0]])
    b = np.array([[5.0, 0.0], [1.0, 0.0]])
    assert exact_w2(a, b) == pytest.approx(math.sqrt(5.0))
    # unequal sizes: one point against two
    assert exact_w2(np.array([[0.0, 0.0]]), np.array([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(1.0)


def test_exact_w2_against_bures_between_gaussians():
    n = 1500
    x, y = _gauss(M1, C1, n, seed=4), _gauss(M2, C2, n, seed=5)
    est = exact_w2(x, y)
    # Gelbrich's bound holds for any two measures, empirical ones included: W2 >= the Bures
    # distance of their means and covariances
    gelbrich = bures_w2(x.mean(0), np.cov(x.T, bias=True), y.mean(0), np.cov(y.T, bias=True))
    assert est >= gelbrich - 1e-9
    # the finite-sample floor: W2 between two independent samples of one Gaussian, same n
    floor = exact_w2(_gauss(M1, C1, n, seed=6), _gauss(M1, C1, n, seed=7))
    assert 0.1 < floor < 0.5
    assert est**2 < gelbrich**2 + 2 * floor**2, (est, gelbrich, floor)
    # against the population value: the sample means move W2 by about |dm| sqrt(tr C / n) / W2 ~ 0.05
    assert est == pytest.approx(bures_w2(M1, C1, M2, C2), abs=0.15)


def test_exact_w2_raises_at_the_iteration_limit_and_on_empty_input():
    x, y = _gauss(M1, C1, 200, seed=8), _gauss(M2, C2, 200, seed=9)
    with pytest.raises(RuntimeError, match="num_itermax"):
        exact_w2(x, y, num_itermax=10)
    with pytest.raises(ValueError, match="non-empty"):
        exact_w2(np.zeros((0, 2)), y)


def test_sliced_w2():
    x = np.random.default_rng(10).normal(size=(1000, 2))
    v = np.array([1.0, -2.0])
    # a translation projects to a shift theta.v on each direction: sliced W2 = |v| / sqrt(2) in 2-D
    assert sliced_w2(x, x + v) == pytest.approx(float(np.linalg.norm(v)) / math.sqrt(2), rel=0.08)
    assert sliced_w2(x, x) == pytest.approx(0.0, abs=1e-12)
    assert sliced_w2(x, x + v, seed=3) == sliced_w2(x, x + v, seed=3)
    with pytest.raises(ValueError, match="500 projections"):
        sliced_w2(x, x, n_projections=499)
    with pytest.raises(ValueError, match="same d"):
        sliced_w2(x, np.zeros((10, 3)))


@pytest.mark.parametrize("m", [800, 500])
def test_sliced_w2_is_pots_value(m):
    """Equal sizes take a sorted-projection shortcut; both paths must give POT's number."""
    import ot

    x = np.random.default_rng(11).normal(size=(800, 2))
    y = 1.3 * np.random.default_rng(12).normal(size=(m, 2)) + 0.5
    state = np.random.get_state()
    ours = sliced_w2(x, torch.from_numpy(y), seed=4)
    assert np.array_equal(np.random.get_state()[1], state[1])  # numpy's global RNG is left alone
    pot = ot.sliced_wasserstein_distance(x, y, n_projections=500, seed=4)
    assert ours == pytest.approx(float(pot), rel=1e-10)


# --------------------------------------------------------------------------- W2 along paths, geodesic
def test_mccann_geodesic_endpoints_and_constant_speed(gen):
    x = get_density("eight_gaussians").sample(150, gen)
    y = SDE.prior_sample((150, 2), gen)
    path, length = mccann_geodesic(x, y, 5)
    assert path.shape == (5, 150, 2)
    assert np.allclose(path[0], x.numpy(), atol=1e-6)
    assert np.allclose(np.sort(path[-1], axis=0), np.sort(y.numpy(), axis=0), atol=1e-6)
    assert abs(length - exact_w2(x, y)) < 1e-6
    steps = w2_steps(path)
    assert np.allclose(steps, length / 4, rtol=1e-4)
    assert abs(exact_w2(path[1], path[3]) - 0.5 * length) < 1e-4 * length
    assert abs(path_length(path) - length) < 1e-4 * length
    # the straight-line path (identity coupling) is no shorter than the geodesic
    assert path_length(path, coupling="identity") >= length - 1e-6


def test_gradient_flow_path_is_longer_than_the_geodesic(gen):
    mix = get_density("asymmetric")
    ts = np.linspace(0, 1, 8)
    ex = wgf.exact_marginal_samples(mix, SDE, ts, 200, gen)
    _, geo = mccann_geodesic(ex[0], ex[-1], 2)
    assert path_length(ex) > geo
    assert w2_along(ex, ex).max() < 1e-6


def test_pot_iteration_limit_is_never_silent(gen):
    x = get_density("eight_gaussians").sample(100, gen)
    y = SDE.prior_sample((100, 2), gen)
    with pytest.raises(RuntimeError, match="did not converge"):
        mccann_geodesic(x, y, 3, num_itermax=5)
    with pytest.raises(RuntimeError, match="did not converge"):
        exact_w2(x, y, num_itermax=5)


# --------------------------------------------------------------------------- Frechet distance
def test_frechet_distance_closed_forms():
    assert frechet_distance(M1, C1, M1, C1) == pytest.approx(0.0, abs=1e-8)
    # the squared Bures-Wasserstein distance
    assert frechet_distance(M1, C1, M2, C2) == pytest.approx(bures_w2(M1, C1, M2, C2) ** 2, rel=1e-8)
    # diagonal covariances: |dm|^2 + sum (sqrt(a) - sqrt(b))^2
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    m = np.array([1.0, 2.0, 3.0])
    expected = 1.0 + (1 - 3) ** 2 + (2 - 1) ** 2
    assert frechet_distance(m, np.diag(a), m + np.array([1.0, 0, 0]), np.diag(b)) == pytest.approx(expected)


def test_frechet_from_features():
    f1, f2 = _gauss(M1, C1, 20000, seed=11), _gauss(M2, C2, 20000, seed=12)
    exact = frechet_distance(M1, C1, M2, C2)
    assert frechet_from_features(f1, f2) == pytest.approx(exact, rel=0.05)
    assert frechet_from_features(f1, f1) == pytest.approx(0.0, abs=1e-6)


def _bures_sym(m1, c1, m2, c2) -> float:
    # the symmetric form tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2), by eigendecompositions only
    w, v = np.linalg.eigh(c1)
    r1 = (v * np.sqrt(w)) @ v.T
    w2 = np.linalg.eigvalsh(r1 @ c2 @ r1)
    return float(
        np.sum((m1 - m2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * np.sum(np.sqrt(np.clip(w2, 0, None)))
    )


def test_frechet_matches_gaussian_closed_form():
    rng = np.random.default_rng(0)
    d = 6
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    c1, c2 = a @ a.T / d + 0.1 * np.eye(d), b @ b.T / d + 0.1 * np.eye(d)
    m1, m2 = rng.normal(size=d), rng.normal(size=d)
    exact = _bures_sym(m1, c1, m2, c2)
    assert frechet_distance(m1, c1, m2, c2) == pytest.approx(exact, rel=1e-6)
    assert frechet_distance(m1, c1, m1, c1) == pytest.approx(0.0, abs=1e-6)
    # sample features: the fitted-Gaussian distance approaches the closed form as n grows
    errs = []
    for n in (500, 50_000):
        f1 = rng.multivariate_normal(m1, c1, size=n)
        f2 = rng.multivariate_normal(m2, c2, size=n)
        errs.append(abs(frechet_from_features(f1, f2) - exact))
    assert errs[1] < 0.03 * exact
    assert errs[1] < errs[0] or errs[0] < 0.03 * exact
    # and through linalg's own matrix square root in the asymmetric form
    covmean = np.real(linalg.sqrtm(c1 @ c2))
    assert exact == pytest.approx(np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * covmean), rel=1e-6)


# --------------------------------------------------------------------------- image quality
def test_image_quality_rejects_bad_samples_and_the_wrong_classifier():
    clf = Classifier(ClassifierConfig(data="digits"))
    with pytest.raises(ValueError, match=r"shape \(n, 1, 8, 8\)"):
        image_quality(torch.zeros(10, 1, 16, 16), "digits", clf)
    with pytest.raises(ValueError, match="NaN"):
        image_quality(torch.full((10, 1, 8, 8), float("nan")), "digits", clf)
    with pytest.raises(ValueError, match="trained on 'digits'"):
        image_quality(torch.zeros(10, 1, 16, 16), "shapes", clf)


@pytest.mark.parametrize("name", IMAGE_SETS)
def test_quality_separates_data_from_noise(name):
    clf = load_pretrained(f"{name}-classifier", expect_kind="classifier")
    x, _ = load_image_set(name, "train")
    g = torch.Generator().manual_seed(0)
    real = image_quality(x[:1000], name, clf, generator=g)
    # training images are a draw like the floor's: within the floor's spread over draws
    assert abs(real["frechet"] - real["floor"]) < 4 * real["floor_std"] + 0.1 * real["floor"]
    noise = (0.5 * torch.randn((1000, *image_shape(name)), generator=g)).clamp(-1, 1)
    fake = image_quality(noise, name, clf)
    assert fake["frechet"] > 20 * max(real["frechet"], real["floor"])
    assert sum(real["class_histogram"]) == pytest.approx(1.0, abs=1e-3)
    assert 0 < real["confidence"] <= 1


def test_summarize():
    assert summarize([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    assert summarize([0.5]) == (0.5, 0.0)


def test_memorisation_flags_copies_and_passes_held_out_data():
    from geoflow.images import load_image_set
    from geoflow.metrics import memorisation, nearest_distances

    train, _ = load_image_set("digits", "train")
    test, _ = load_image_set("digits", "test")
    copies = memorisation(train[:300], train, test)
    assert copies["memorises"] and copies["copy_fraction"] == 1.0 and copies["median_ratio"] == 0.0
    np.testing.assert_array_equal(copies["nearest_train_index"], np.arange(300))
    # held-out images are what a generalising model looks like: not flagged
    fresh = memorisation(
        test[:200] + 0.01 * torch.randn(test[:200].shape, generator=torch.Generator().manual_seed(0)),
        train,
        test[200:],
    )
    assert not fresh["memorises"] and fresh["copy_fraction"] < 0.05
    # nearest distances against a brute-force oracle
    a, b = torch.randn(7, 3, generator=torch.Generator().manual_seed(1)), torch.randn(5, 3)
    brute = torch.cdist(a, b).min(1).values.numpy()
    np.testing.assert_allclose(nearest_distances(a, b), brute, rtol=1e-6, atol=1e-6)
