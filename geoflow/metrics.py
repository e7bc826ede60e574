"""Quality numbers of method.md section 4, each with its finite-sample floor.

* ``kl_knn``: KL(q || p) = -H(q) - E_q log p with the Kozachenko-Leonenko k-NN entropy (k = 5).
* ``sliced_w2``: sliced W2 by POT (``ot.sliced_wasserstein_distance``, >= 500 projections).
* ``exact_w2``: exact W2 by POT ``ot.emd2`` on the squared Euclidean cost; an iteration-limit stop
  raises instead of passing silently.
* ``frechet_distance``: the Frechet distance between Gaussians fitted to features.
* ``image_quality``: the *classifier-feature Fréchet distance* (not Inception FID): a small CNN
  (:class:`geoflow.nets.Classifier`) is trained on an image set's training split; the Fréchet
  distance between Gaussians fitted to its penultimate-layer features of generated samples and of
  the held-out test split is the score, and the same distance between training images and the test
  split is the floor. ``accuracy``: the classifier's test accuracy.
* W2 along paths of measures (exact transport by POT): ``w2_along`` (frame by frame against a
  reference path), ``w2_steps`` and ``path_length`` (a path's own W2 steps and length), and the true
  W2 geodesic ``mccann_geodesic`` (McCann's displacement interpolation), and
  ``displacement_interpolation``: a keyframed path of measures made continuous in time by McCann
  interpolation between consecutive keyframes.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.spatial import cKDTree
from scipy.special import digamma, gammaln

from geoflow.images import _check_name, image_shape, load_image_set
from geoflow.nets import Classifier
from geoflow.validate import LIMITS


class _LazyPOT:
    """POT, imported on first use: its package imports scikit-learn (1-3 s), which the app's first
    chart does not need (the W2 numbers are computed after the chart is sent)."""

    def __getattr__(self, name: str):
        import ot as pot

        return getattr(pot, name)


ot = _LazyPOT()

ArrayLike = np.ndarray | torch.Tensor

MIN_PARTICLES = LIMITS.min_particles  # fewest particles for a blob entropy or a k-NN entropy estimate


def _np(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _check_particles(x: ArrayLike, what: str = "particles", min_n: int = MIN_PARTICLES) -> np.ndarray:
    arr = _np(x)
    if arr.ndim != 2:
        raise ValueError(f"{what} must have shape (n, d), got {arr.shape}")
    if arr.shape[0] < min_n:
        raise ValueError(f"{what}: need at least {min_n} particles, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contain NaN or infinite values")
    return arr


def _check_path(p: ArrayLike, what: str) -> np.ndarray:
    arr = _np(p)
    if arr.ndim != 3 or arr.shape[1] < 1:
        raise ValueError(f"{what} must have shape (K, n, d), got {arr.shape}")
    return arr


def knn_entropy(x: ArrayLike, k: int = 5) -> float:
    """Kozachenko-Leonenko entropy estimate (nats) of samples x of shape (n, d).

    ``H = psi(n) - psi(k) + log V_d + (d / n) sum_i log eps_i`` with eps_i the distance from x_i to
    its k-th nearest neighbour and ``V_d`` the unit-ball volume.
    """
    x = _np(x)
    n, d = x.shape
    if n <= k:
        raise ValueError(f"need more than k={k} samples for the k-NN entropy, got {n}")
    dist, _ = cKDTree(x).query(x, k=k + 1)
    eps = dist[:, -1]
    if np.any(eps <= 0):
        raise ValueError("duplicate samples: the k-NN entropy needs distinct points")
    log_vd = (d / 2) * math.log(math.pi) - gammaln(d / 2 + 1)
    return float(digamma(n) - digamma(k) + log_vd + d * np.mean(np.log(eps)))


def kl_knn(samples: ArrayLike, log_prob: Callable[[torch.Tensor], torch.Tensor], k: int = 5) -> float:
    """``KL(q || p) ~ -H_kNN(samples) - mean log p(samples)`` (method.md section 4)."""
    x = torch.as_tensor(_np(samples))
    lp = _np(log_prob(x))
    return float(-knn_entropy(x, k) - lp.mean())


def sliced_w2(x: ArrayLike, y: ArrayLike, n_projections: int = 500, seed: int = 0) -> float:
    """Sliced W2 between two point clouds (POT, uniform weights)."""
    if n_projections < 500:
        raise ValueError(f"use at least 500 projections, got {n_projections}")
    xa, ya = _np(x), _np(y)
    if xa.ndim != 2 or ya.ndim != 2 or xa.shape[1] != ya.shape[1]:
        raise ValueError(f"need two point clouds (n, d) of the same d, got {xa.shape} and {ya.shape}")
    # POT's own directions, from a private RandomState: POT's seed= argument seeds numpy globally
    proj = ot.sliced.get_random_projections(xa.shape[1], n_projections, np.random.RandomState(seed))
    if len(xa) == len(ya):
        # equal-size uniform clouds: the optimal 1-D coupling pairs sorted values. Same number as
        # POT's general quantile code, about 20x faster at n = 10000 (the benchmark's size).
        px, py = np.sort(xa @ proj, axis=0), np.sort(ya @ proj, axis=0)
        return float(np.sqrt(np.mean((px - py) ** 2)))
    return float(ot.sliced_wasserstein_distance(xa, ya, projections=proj))


def exact_w2(x: ArrayLike, y: ArrayLike, num_itermax: int | None = None) -> float:
    """Exact W2 between uniform point clouds by POT's network simplex on ``|x - y|^2``.

    Raises:
        RuntimeError: if POT stopped at its iteration limit (the result would not be exact).
    """
    xa, ya = _np(x), _np(y)
    n, m = len(xa), len(ya)
    if n == 0 or m == 0:
        raise ValueError("W2 needs two non-empty point sets")
    cost = ot.dist(xa, ya, metric="sqeuclidean")
    itermax = num_itermax or max(1_000_000, 100 * n * m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        val, log = ot.emd2(np.full(n, 1 / n), np.full(m, 1 / m), cost, numItermax=itermax, log=True)
    if log.get("warning"):
        raise RuntimeError(f"POT emd2 did not converge ({log['warning']}); raise num_itermax")
    return float(math.sqrt(max(val, 0.0)))


# --------------------------------------------------------------------------- W2 along paths
def w2_along(particles_by_t: ArrayLike, exact_by_t: ArrayLike, num_itermax: int | None = None) -> np.ndarray:
    """Exact W2 (POT ``emd2``) between two paths frame by frame: ``W2(P[k], Q[k])``, shape (K,).

    Use it for a sampler's particles against exact samples of mu_t at the same times (for
    example :func:`geoflow.wgf.exact_marginal_samples`), and print the floor: the same distance between
    two exact samples. Raises RuntimeError if POT hits its iteration limit (never silently inexact).
    """
    p, q = _check_path(particles_by_t, "particles_by_t"), _check_path(exact_by_t, "exact_by_t")
    if p.shape[0] != q.shape[0]:
        raise ValueError(f"paths need the same number of frames, got {p.shape[0]} and {q.shape[0]}")
    return np.array([exact_w2(a, b, num_itermax) for a, b in zip(p, q, strict=True)])


def w2_steps(particles: ArrayLike, num_itermax: int | None = None) -> np.ndarray:
    """Per-step W2 displacement ("speed" times the step) ``W2(P[k], P[k+1])``: (K, n, d) -> (K - 1,)."""
    p = _check_path(particles, "particles")
    return np.array([exact_w2(a, b, num_itermax) for a, b in zip(p[:-1], p[1:], strict=True)])


def path_length(particles: ArrayLike, *, coupling: str = "ot") -> float:
    """Length of a discrete path of measures: ``sum_k W2(P[k], P[k+1])``.

    ``coupling="ot"`` uses the exact W2 (a lower bound of the true curve's length that tightens as
    keyframes get denser); ``"identity"`` uses the particles' own pairing,
    ``sqrt(mean |P[k+1]_i - P[k]_i|^2)`` (an upper bound of each W2 term).
    """
    if coupling == "ot":
        return float(w2_steps(particles).sum())
    if coupling == "identity":
        p = _check_path(particles, "particles")
        return float(np.sqrt(((p[1:] - p[:-1]) ** 2).sum(-1).mean(-1)).sum())
    raise ValueError(f"unknown coupling {coupling!r}; valid: ot, identity")


def mccann_geodesic(
    x: ArrayLike, y: ArrayLike, ks: int | ArrayLike = 20, num_itermax: int | None = None
) -> tuple[np.ndarray, float]:
    """The W2 geodesic between two equal-size particle sets (McCann's displacement interpolation).

    With POT's optimal coupling (``ot.emd``: a permutation sigma for uniform equal-size sets),
    ``z_k = (1 - k) x_i + k y_sigma(i)``. It has constant speed, ``W2(z_a, z_b) = |a - b| W2(x, y)``,
    so its length is ``W2(x, y)``: the shortest path of measures, to compare with the gradient-flow
    path's length (:func:`path_length`).

    Args:
        x: (n, d) start (e.g. data).
        y: (n, d) end (e.g. prior samples).
        ks: number of frames ``K >= 2`` (evenly spaced in [0, 1]) or fractions in [0, 1].
        num_itermax: POT's network-simplex iteration limit (default ``max(10^6, 100 n^2)``); reaching
            it raises RuntimeError instead of returning an inexact coupling.

    Returns:
        ``(path, length)``: float32 (K, n, d) with particle i following its own straight line, and W2(x, y).
    """
    xa, ya = _check_particles(x, "x", 1), _check_particles(y, "y", 1)
    if xa.shape != ya.shape:
        raise ValueError(f"x and y must have the same shape, got {xa.shape} and {ya.shape}")
    if isinstance(ks, (int, np.integer)):
        if ks < 2:
            raise ValueError(f"ks must be >= 2 frames or fractions in [0, 1], got {ks}")
        fr = np.linspace(0.0, 1.0, int(ks))
    else:
        fr = _np(ks).reshape(-1)
        if np.any(fr < 0) or np.any(fr > 1):
            raise ValueError(f"interpolation fractions must lie in [0, 1], got {fr.tolist()}")
    n = xa.shape[0]
    cost = ot.dist(xa, ya, metric="sqeuclidean")
    u = np.full(n, 1.0 / n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the log's "warning" entry is checked below and raised
        plan, log = ot.emd(u, u, cost, numItermax=num_itermax or max(1_000_000, 100 * n * n), log=True)
    if log.get("warning"):
        raise RuntimeError(f"POT emd did not converge ({log['warning']})")
    perm = np.argmax(plan, axis=1)  # uniform equal-size OT is a permutation (a vertex of the polytope)
    yp = ya[perm]
    path = np.stack([(1 - f) * xa + f * yp for f in fr]).astype(np.float32)
    return path, float(math.sqrt(max(log["cost"], 0.0)))


def displacement_interpolation(
    key_times: ArrayLike, keyframes: ArrayLike, times: ArrayLike, num_itermax: int | None = None
) -> np.ndarray:
    """A keyframed path of particle measures, continuous in time (McCann interpolation per interval).

    Between consecutive keyframes ``P_k`` and ``P_{k+1}`` the measure at fraction ``l`` of the
    interval is ``((1 - l) x_i + l y_sigma(i))_i``, with sigma POT's optimal coupling (``ot.emd``) of
    the two keyframes: the W2 geodesic between them, so ``W2(z_l, P_k) = l W2(P_k, P_{k+1})`` and
    ``W2(z_l, P_{k+1}) = (1 - l) W2(P_k, P_{k+1})``. The couplings are chained (keyframe k + 1 is
    reordered to follow keyframe k), so particle i moves continuously through every keyframe.

    Args:
        key_times: (K,) strictly increasing times (or any monotone reparametrisation, e.g. flow time).
        keyframes: (K, n, d) particles at those times.
        times: (F,) times to draw, clipped to ``[key_times[0], key_times[-1]]``.
        num_itermax: POT's iteration limit (reaching it raises RuntimeError).

    Returns:
        (F, n, d) float32.
    """
    kt = _np(key_times).reshape(-1).astype(np.float64)
    kx = _check_path(keyframes, "keyframes")
    if kt.shape[0] != kx.shape[0] or kt.shape[0] < 1:
        raise ValueError(f"need one time per keyframe: {kt.shape[0]} times, {kx.shape[0]} keyframes")
    if np.any(np.diff(kt) <= 0):
        raise ValueError("keyframe times must be strictly increasing")
    chained = [kx[0]]
    for k in range(1, kx.shape[0]):
        # the geodesic's end point is keyframe k + 1 in the order of POT's coupling to keyframe k
        path, _ = mccann_geodesic(chained[-1], kx[k], [1.0], num_itermax)
        chained.append(path[0].astype(np.float64))
    ch = np.stack(chained)
    t = np.clip(_np(times).reshape(-1).astype(np.float64), kt[0], kt[-1])
    if kt.shape[0] == 1:
        return np.repeat(ch[:1], t.shape[0], 0).astype(np.float32)
    j = np.clip(np.searchsorted(kt, t, side="right") - 1, 0, kt.shape[0] - 2)
    lam = ((t - kt[j]) / (kt[j + 1] - kt[j]))[:, None, None]
    return ((1 - lam) * ch[j] + lam * ch[j + 1]).astype(np.float32)


def frechet_distance(mu1: ArrayLike, cov1: ArrayLike, mu2: ArrayLike, cov2: ArrayLike) -> float:
    """``|mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1 C2)^{1/2})`` (the FID formula; squared Bures-W2)."""
    m1, m2, c1, c2 = _np(mu1), _np(mu2), _np(cov1), _np(cov2)
    # tr (C1 C2)^{1/2} = sum sqrt(eig(C1^{1/2} C2 C1^{1/2})): symmetric PSD, no general sqrtm needed
    w, v = np.linalg.eigh((c1 + c1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    mid = root1 @ c2 @ root1
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((mid + mid.T) / 2), 0, None)).sum()
    return float(np.sum((m1 - m2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * cross)


def frechet_from_features(f1: ArrayLike, f2: ArrayLike) -> float:
    """Frechet distance between Gaussians fitted to two feature sets of shape (n, k)."""
    a, b = _np(f1), _np(f2)
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


# --------------------------------------------------------------------------- image quality
def accuracy(classifier: Classifier, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of images whose most probable class is the label."""
    probs, _ = classifier.predict(x)
    return float((probs.argmax(1) == y).float().mean())


@dataclass
class _Reference:
    test_features: torch.Tensor
    test_accuracy: float
    train_features: torch.Tensor = field(repr=False)


_REFERENCES: dict[tuple, _Reference] = {}
_MAX_REFERENCES = 4


def _reference(name: str, classifier: Classifier) -> _Reference:
    # the features of every train and test image cost seconds (12000 images for shapes32): kept
    # for the same classifier object with the same weights (their sum, so in-place training misses)
    with torch.no_grad():
        weights = float(sum(p.double().sum() for p in classifier.parameters()))
    key = (name, id(classifier), weights)
    if key not in _REFERENCES:
        xt, yt = load_image_set(name, "test")
        probs, ft = classifier.predict(xt)
        xr, _ = load_image_set(name, "train")
        _, fr = classifier.predict(xr)
        if len(_REFERENCES) >= _MAX_REFERENCES:
            _REFERENCES.pop(next(iter(_REFERENCES)))
        _REFERENCES[key] = _Reference(ft, float((probs.argmax(1) == yt).float().mean()), fr)
    return _REFERENCES[key]


def image_quality(
    samples: torch.Tensor,
    name: str,
    classifier: Classifier,
    generator: torch.Generator | None = None,
    floor_draws: int = 5,
) -> dict:
    """Classifier-feature Fréchet distance of samples to the test split, with its floor.

    ``frechet = |mu_s - mu_t|^2 + tr(C_s + C_t - 2 (C_s C_t)^{1/2})`` on the classifier's
    penultimate features (method.md section 4; not Inception FID). The floor is the same distance
    between ``min(n, n_train)`` training images (drawn by ``generator``) and the test split,
    averaged over ``floor_draws`` draws.

    Args:
        samples: (n, C, H, W) in the data's [-1, 1] scale; n >= 1000 is recommended.
        name: the image set the samples imitate.
        classifier: that set's feature classifier.
        generator: picks the training images of the floor (default: seed 0).
        floor_draws: number of training subsets the floor is averaged over.

    Returns:
        dict with ``frechet``, ``floor`` (and ``floor_std`` over the draws), ``confidence`` (mean
        top-class probability), ``class_histogram`` (fraction of samples per predicted class),
        ``test_accuracy``, ``n_samples`` and ``n_test``.
    """
    _check_name(name)
    shape = image_shape(name)
    if samples.ndim != 4 or tuple(samples.shape[1:]) != shape:
        raise ValueError(f"samples for {name!r} must have shape (n, {', '.join(map(str, shape))})")
    if samples.shape[0] < 2:
        raise ValueError("need at least 2 samples for a Fréchet distance")
    if not bool(torch.isfinite(samples).all()):
        raise ValueError("samples contain NaN or inf")
    if floor_draws < 1:
        raise ValueError(f"floor_draws must be >= 1, got {floor_draws}")
    if classifier.cfg.data != name:
        raise ValueError(f"classifier was trained on {classifier.cfg.data!r}, not {name!r}")
    ref = _reference(name, classifier)
    probs, fs = classifier.predict(samples.detach().cpu())
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    n_train = ref.train_features.shape[0]
    n_floor = min(samples.shape[0], n_train)
    # the distance at n ~ 1000 varies by tens of percent between draws (a few feature directions
    # dominate the mean term), so the floor is averaged over several training subsets
    floors = [
        frechet_from_features(
            ref.train_features[torch.randperm(n_train, generator=g)[:n_floor]], ref.test_features
        )
        for _ in range(floor_draws)
    ]
    hist = torch.bincount(probs.argmax(1), minlength=classifier.cfg.n_classes).float() / probs.shape[0]
    return {
        "frechet": frechet_from_features(fs, ref.test_features),
        "floor": float(np.mean(floors)),
        "floor_std": float(np.std(floors, ddof=1)) if floor_draws > 1 else 0.0,
        "confidence": float(probs.max(1).values.mean()),
        "class_histogram": [round(float(h), 4) for h in hist],
        "test_accuracy": ref.test_accuracy,
        "n_samples": int(samples.shape[0]),
        "n_test": int(ref.test_features.shape[0]),
    }


def summarize(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def nearest_distances(x: ArrayLike, ref: ArrayLike, exclude_self: bool = False) -> np.ndarray:
    """Euclidean distance from each row of ``x`` (n, *D) to its nearest row of ``ref`` (m, *D).

    ``exclude_self``: x and ref are the same set; a point's distance to itself is ignored.
    """
    a = _np(x).reshape(len(_np(x)), -1)
    b = _np(ref).reshape(len(_np(ref)), -1)
    out = np.empty(len(a))
    for i in range(0, len(a), 512):  # blocks keep the distance matrix small
        blk = a[i : i + 512]
        d2 = (blk**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * blk @ b.T
        if exclude_self:
            d2[np.arange(len(blk)), np.arange(i, i + len(blk))] = np.inf
        out[i : i + len(blk)] = np.sqrt(np.maximum(d2.min(1), 0.0))
    return out


def memorisation(samples: ArrayLike, train: ArrayLike, test: ArrayLike) -> dict:
    """Does a model copy its training images? Nearest-train over nearest-held-out distance per sample.

    For each sample, ``r = d(sample, nearest train image) / d(sample, nearest held-out image)``. A
    model that copies its training set has r near 0; one that generalises sits where real held-out
    images sit: the reference is the same ratio for each held-out image (its nearest other held-out
    image in the denominator). The training split is larger than the held-out one, so r < 1 is
    expected even without copying; compare with the reference, not with 1.

    Returns:
        ``median_ratio``, ``reference_median_ratio``, ``copy_fraction`` (samples whose nearest training
        image is closer than 1/4 of the median train-to-train nearest distance), ``reference_copy_fraction``,
        ``memorises`` (median ratio below half the reference), ``d_train`` (per sample) and
        ``nearest_train_index`` (per sample).
    """
    s = _np(samples).reshape(len(_np(samples)), -1)
    tr = _np(train).reshape(len(_np(train)), -1)
    te = _np(test).reshape(len(_np(test)), -1)
    d_train = nearest_distances(s, tr)
    d_test = nearest_distances(s, te)
    ref_train = nearest_distances(te, tr)
    ref_test = nearest_distances(te, te, exclude_self=True)
    tt = nearest_distances(tr, tr, exclude_self=True)
    close = 0.25 * float(np.median(tt))
    ratio = d_train / np.maximum(d_test, 1e-12)
    ref_ratio = ref_train / np.maximum(ref_test, 1e-12)
    idx = np.empty(len(s), dtype=np.int64)
    for i in range(0, len(s), 512):
        blk = s[i : i + 512]
        d2 = (blk**2).sum(1)[:, None] + (tr**2).sum(1)[None, :] - 2.0 * blk @ tr.T
        idx[i : i + len(blk)] = d2.argmin(1)
    med, ref_med = float(np.median(ratio)), float(np.median(ref_ratio))
    return {
        "median_ratio": med,
        "reference_median_ratio": ref_med,
        "copy_fraction": float(np.mean(d_train < close)),
        "reference_copy_fraction": float(np.mean(ref_train < close)),
        "memorises": bool(med < 0.5 * ref_med),
        "d_train": d_train,
        "nearest_train_index": idx,
    }
