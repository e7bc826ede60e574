"""JKO on particles: the blob method's minimizing movements of ``F = KL(. || N(0, I))`` (Theorem 1).

* :func:`jko_path`: the minimizing-movement scheme of step h in the plain flow time
  ``s(t) = int_0^t beta`` (:func:`geoflow.wgf.flow_time`), with the blob entropy (Carrillo, Craig &
  Patacchini 2019, :func:`blob_free_energy`) and the identity coupling (:func:`jko_step`, solved by
  L-BFGS); results are kept in a memory cache and optionally on disk.
* **Shipped paths**: :func:`preset_jko_path` serves the mixture presets' JKO paths from
  ``pretrained/flows/`` instantly (written by :func:`write_preset_flows`).
* :func:`theorem_check`: a numerical check of Theorems 1 and 2 as a table (the JKO path, forward
  Euler-Maruyama and the reverse splitting path against the exact marginals).

Paths are returned as float32 numpy arrays ``(K, n, d)`` (keyframes, particles, dimension), with
the time conventions of :mod:`geoflow.wgf`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geoflow.densities import GaussianMixture
from geoflow.metrics import ArrayLike, _check_particles, _np, exact_w2
from geoflow.sde import VPSDE
from geoflow.validate import LIMITS
from geoflow.wgf import (
    _LOG_2PI,
    KNN_K,
    _require_vp,
    _substeps,
    exact_marginal_samples,
    flow_time,
    free_energy_exact,
    free_energy_particles,
    keyframe_times,
    require_mixture,
    splitting_path,
)

# the blob entropy is O(n^2) per evaluation (n = 5000: 200 MB per kernel); geoflow.validate.LIMITS
MAX_JKO_PARTICLES = LIMITS.flow_particles


# =========================================================================== blob free energy
def _blob_energy_grad(y: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``sum_i log r_i`` with ``r_i = sum_j exp(-|y_i - y_j|^2 / (2 eps^2))``, and its gradient (n, d).

    ``d/dy_k sum_i log r_i = -(1 / eps^2) sum_j A_kj (y_k - y_j)`` with
    ``A_kj = K_kj (1 / r_k + 1 / r_j)``: the blob method's ``grad (log(phi * mu) + phi * (mu / phi * mu))``.
    Written by hand (autograd through the pairwise matrix is 20x slower): K is symmetric, so every
    sum over j is one product ``K @ [y / r, 1 / r, y]`` and A is never formed.
    """
    d = y.shape[1]
    ys = y / eps
    half_sq = 0.5 * (ys * ys).sum(1)
    # K_ij = exp(y_i.y_j - |y_i|^2/2 - |y_j|^2/2) in units of eps; clamp guards rounding above 0
    kern = torch.addmm(-half_sq[None, :], ys, ys.T).sub_(half_sq[:, None]).clamp_(max=0.0).exp_()
    r = kern.sum(1)
    inv_r = 1.0 / r
    km = kern @ torch.cat([y * inv_r[:, None], inv_r[:, None], y], 1)
    a_y = km[:, :d] + km[:, d + 1 :] * inv_r[:, None]  # sum_j A_kj y_j
    a_sum = km[:, d] + 1.0  # sum_j A_kj = (K (1/r))_k + r_k / r_k
    grad = -(a_sum[:, None] * y - a_y) / (eps * eps)
    return torch.log(r).sum(), grad


def blob_free_energy(x: ArrayLike, eps: float) -> float:
    """Free energy of the Gaussian-mollified empirical measure (the blob method's functional).

    ``F_eps(mu_n) = (1/n) sum_i log((phi_eps * mu_n)(x_i)) + mean |x_i|^2 / 2 + (d/2) log(2 pi)``,
    ``phi_eps = N(0, eps^2 I)`` (Carrillo, Craig & Patacchini 2019): the functional that
    :func:`jko_path` minimises.
    """
    arr = _check_particles(x, "particles for the blob entropy")
    if not eps > 0:
        raise ValueError(f"blob bandwidth eps must be > 0, got {eps}")
    n, d = arr.shape
    val, _ = _blob_energy_grad(torch.as_tensor(arr), float(eps))
    ent_term = float(val) / n - math.log(n) - 0.5 * d * math.log(2 * math.pi * eps * eps)
    return ent_term + 0.5 * float(np.mean(np.sum(arr * arr, 1))) + 0.5 * d * _LOG_2PI


def blob_bandwidth(x: ArrayLike, scale: float = 1.0) -> float:
    """Default blob bandwidth: ``scale`` times the median distance to the 5th nearest neighbour.

    Tied to the local particle spacing so the mollifier resolves narrow mixture components at
    t = 0 and widens as the particles spread toward N(0, I).
    """
    from scipy.spatial import cKDTree

    arr = _np(x)
    k = min(KNN_K, arr.shape[0] - 1)
    dist, _ = cKDTree(arr).query(arr, k=k + 1)
    return float(scale * np.median(dist[:, -1]))


# =========================================================================== JKO
@dataclass
class JKOPath:
    """A JKO path of ``F = KL(. || N(0, I))`` at its keyframes (see :func:`jko_path`).

    Attributes:
        t: (K,) VP times of the keyframes.
        s: (K,) plain flow times ``int_0^t beta``.
        particles: (K, n, d) float32 particle positions (same particle order in every frame).
        free_energy: (K,) ``KL(mu || pi)`` by the k-NN estimator
            (:func:`geoflow.wgf.free_energy_particles`). It reads low (about -0.15 at t = T for
            n = 1000, where the truth is 0): the estimator assumes i.i.d. points, and JKO particles
            are more evenly spread than i.i.d. ones.
        free_energy_blob: (K,) the blob functional the scheme minimises (:func:`blob_free_energy`);
            close to the exact value once mixture components are wider than the bandwidth.
        displacement: (K - 1,) per keyframe interval, the sum over JKO steps of
            ``sqrt(mean |y_i - x_i|^2)``: the identity-coupling length (an upper bound of the W2 length).
        coupling_gap: (K - 1,) for the first JKO step of each interval, identity-coupling cost
            minus POT's exact W2^2 (>= 0; ~0 means the identity coupling was optimal); NaN if unchecked.
        n_steps: (K - 1,) JKO steps per interval (each of size at most h in s).
        bandwidth: (K - 1,) blob bandwidth used in each interval.
        iterations: total objective evaluations of the L-BFGS solves (the cost driver).
        h: the step bound in s.
        seconds: wall time of the computation (0 when served from the cache).
    """

    t: np.ndarray
    s: np.ndarray
    particles: np.ndarray
    free_energy: np.ndarray
    free_energy_blob: np.ndarray
    displacement: np.ndarray
    coupling_gap: np.ndarray
    n_steps: np.ndarray
    bandwidth: np.ndarray
    iterations: int
    h: float
    seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    def to_arrays(self, prefix: str = "jko_") -> dict[str, np.ndarray]:
        """Arrays for ``np.savez`` (``particles`` under ``prefix.rstrip('_')``)."""
        return {
            prefix.rstrip("_"): self.particles,
            f"{prefix}s": self.s,
            f"{prefix}free_energy_blob": self.free_energy_blob,
            f"{prefix}displacement": self.displacement,
            f"{prefix}coupling_gap": self.coupling_gap,
            f"{prefix}n_steps": self.n_steps,
            f"{prefix}bandwidth": self.bandwidth,
        }


def _lbfgs(
    fun: Callable[[torch.Tensor], tuple[float, torch.Tensor]],
    y: torch.Tensor,
    h0: float,
    max_iter: int,
    tol: float,
    history: int = 10,
) -> tuple[torch.Tensor, int]:
    """Minimise ``fun`` (value, gradient) by L-BFGS with Armijo backtracking; returns (argmin, evaluations).

    ``h0`` is the initial inverse-Hessian scale. torch.optim.LBFGS's first step is ``1 / |g|_1``,
    which with thousands of coordinates wastes a dozen evaluations; here the first step uses the
    known curvature of the transport term instead, and later ones the usual ``s.y / y.y``.
    """
    f, g = fun(y)
    evals = 1
    hist: list[tuple[torch.Tensor, torch.Tensor, float]] = []
    for _ in range(max_iter):
        if float(g.pow(2).sum(1).mean().sqrt()) < tol:  # RMS of the per-particle gradients
            break
        # two-loop recursion: d = -H g
        q = g.clone()
        alphas = []
        for s_, y_, rho in reversed(hist):
            a_ = rho * float((s_ * q).sum())
            alphas.append(a_)
            q.sub_(a_ * y_)
        gamma = h0
        if hist:
            s_, y_, _ = hist[-1]
            gamma = float((s_ * y_).sum() / (y_ * y_).sum())
        r = gamma * q
        for (s_, y_, rho), a_ in zip(hist, reversed(alphas), strict=True):
            r.add_(s_ * (a_ - rho * float((y_ * r).sum())))
        d = -r
        gd = float((g * d).sum())
        if gd >= 0:  # not a descent direction (non-convex curvature): restart from scaled gradient
            hist.clear()
            d = -h0 * g
            gd = float((g * d).sum())
        step = 1.0
        while True:
            y_new = y + step * d
            f_new, g_new = fun(y_new)
            evals += 1
            if f_new <= f + 1e-4 * step * gd or step < 1e-6:
                break
            step *= 0.5
        s_, y_ = y_new - y, g_new - g
        sy = float((s_ * y_).sum())
        if sy > 1e-12:
            hist.append((s_, y_, 1.0 / sy))
            if len(hist) > history:
                hist.pop(0)
        y, f, g = y_new, f_new, g_new
    return y, evals


def jko_step(
    x: torch.Tensor,
    h: float,
    eps: float,
    *,
    y0: torch.Tensor | None = None,
    max_iter: int = 60,
    tol: float = 1e-3,
) -> tuple[torch.Tensor, int]:
    """One blob-JKO step: ``argmin_y F_eps(y) + (1 / 2h) mean |y_i - x_i|^2`` over particle positions.

    ``F_eps`` is :func:`blob_free_energy`. The transport term uses the identity coupling, which is
    the optimal one for small h (and an upper bound of ``W2^2`` otherwise; :func:`jko_path` checks
    the gap with POT). Minimised by L-BFGS on ``n`` times the objective with the analytic blob
    gradient; the optimality condition is the implicit Euler step
    ``(y_i - x_i) / h = -(grad_i blob + y_i)`` of the particle velocity ``-grad log(mu / pi)``.

    Args:
        x: (n, d) float64 particles of ``mu_k``.
        h: step in the plain flow time s.
        eps: blob bandwidth.
        y0: initial guess (default x); :func:`jko_path` passes the previous step's velocity
            extrapolated, which saves iterations.
        max_iter: L-BFGS iteration cap.
        tol: stop when the root-mean-square per-particle gradient is below ``tol`` (the particle
            displacement error is then about ``h * tol``).

    Returns:
        ``(y, evaluations)`` with y of shape (n, d), float64, and the objective evaluations used.
    """
    if not h > 0:
        raise ValueError(f"JKO step h must be > 0, got {h}")
    inv_h = 1.0 / h

    def fun(y: torch.Tensor) -> tuple[float, torch.Tensor]:
        val, grad = _blob_energy_grad(y, eps)
        diff = y - x
        obj = float(val) + 0.5 * float((y * y).sum()) + 0.5 * inv_h * float((diff * diff).sum())
        return obj, grad + y + inv_h * diff

    start = x if y0 is None else y0
    return _lbfgs(fun, start.clone(), 1.0 / (1.0 + inv_h), max_iter, tol)


PRECOMPUTED_DIR = Path(__file__).resolve().parents[1] / "pretrained" / "flows"
PRESET_FLOW = {"n": 1000, "keyframes": 20, "h": 0.1, "seed": 0}  # the inputs shipped precomputed
_MEMO: OrderedDict[str, JKOPath] = OrderedDict()
_MEMO_SIZE = 32


def _cache_key(x0: np.ndarray, payload: dict[str, Any]) -> str:
    hsh = hashlib.sha256()
    hsh.update(np.ascontiguousarray(x0, dtype=np.float64).tobytes())
    hsh.update(str(x0.shape).encode())
    hsh.update(json.dumps(payload, sort_keys=True, default=str).encode())
    return hsh.hexdigest()[:32]


def _save_path(path: JKOPath, file: Path) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.asarray(v) for k, v in path.__dict__.items() if isinstance(v, np.ndarray)}
    scalars = {"iterations": path.iterations, "h": path.h, "meta": path.meta}
    tmp = file.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, scalars=np.array(json.dumps(scalars)), **arrays)
    tmp.replace(file)


def _load_path(file: Path) -> JKOPath:
    with np.load(file) as z:
        scalars = json.loads(str(z["scalars"]))
        arrays = {k: z[k] for k in z.files if k != "scalars"}
    return JKOPath(
        **arrays, iterations=scalars["iterations"], h=scalars["h"], seconds=0.0, meta=scalars["meta"]
    )


def jko_path(
    x0: ArrayLike,
    sde: VPSDE,
    h: float,
    keyframes: int | ArrayLike = 20,
    *,
    bandwidth: float | None = None,
    bandwidth_scale: float = 2.0,
    max_iter: int = 60,
    tol: float = 1e-3,
    check_coupling: bool = False,
    cache: bool = True,
    cache_dir: str | Path | None = None,
) -> JKOPath:
    """The JKO (minimizing-movement) path of ``F = KL(. || N(0, I))`` on particles (method.md section 2).

    Each step solves ``mu_{k+1} = argmin_mu F(mu) + W2^2(mu, mu_k) / (2 h)`` over particle
    positions, with F's entropy replaced by the blob entropy (:func:`blob_free_energy`) and W2^2 by
    the identity-coupling cost (see :func:`jko_step`). By Theorem 1 the path approximates the exact
    marginals ``mu_t`` of the VP SDE: ``h`` is a step of the plain flow time ``s = int_0^t beta``, and
    each interval between keyframes is split into equal steps of at most h that land on the
    keyframe's flow time exactly, so each keyframe's VP time t is exact.

    Args:
        x0: data particles (n, d), n >= ``MIN_PARTICLES`` (the path's frame at t = 0).
        sde: the VP SDE (its schedule fixes the time change t -> s).
        h: JKO step bound in flow time s, > 0 (``int_0^T beta`` is about 5 for the default schedule).
        keyframes: ``K >= 2`` evenly spread VP times over ``[0, T]``, or increasing VP times in
            ``[0, T]`` (the path starts at x0 at t = 0 and is reported at these times).
        bandwidth: fixed blob bandwidth; default :func:`blob_bandwidth` of the particles at the start of
            each keyframe interval, times ``bandwidth_scale``.
        bandwidth_scale: factor of :func:`blob_bandwidth` (default 2: about 2.5 particle spacings,
            so the self-interaction of each blob weighs little; smaller values under-spread a Gaussian
            by a few percent and cost twice the iterations, larger ones blur narrow components at t = 0).
        max_iter: L-BFGS iterations per step.
        tol: gradient tolerance per particle.
        check_coupling: compare, with POT, the identity coupling to the optimal one on the first step
            of each interval (``coupling_gap``; costs one exact OT per keyframe).
        cache: serve repeated calls with the same inputs from memory (same inputs, same result), and
            from ``pretrained/flows/`` when these exact inputs were shipped precomputed
            (:func:`preset_jko_path`).
        cache_dir: also keep results on disk there (one small ``.npz`` per input hash).

    Returns:
        :class:`JKOPath`.

    Raises:
        ValueError: h <= 0, too few particles, keyframes outside ``[0, T]``, a non-VP SDE.
    """
    sde = _require_vp(sde)
    if not (isinstance(h, (int, float)) and math.isfinite(h) and h > 0):
        s_max = float(sde.int_beta(sde.T))
        raise ValueError(
            f"JKO step h must be a number in (0, {s_max:.4g}] (a step of s = int beta), got {h!r}"
        )
    x_np = _check_particles(x0, "x0 (the JKO needs a blob entropy)")
    if x_np.shape[0] > MAX_JKO_PARTICLES:
        raise ValueError(f"the JKO path takes at most {MAX_JKO_PARTICLES} particles, got {x_np.shape[0]}")
    ts = keyframe_times(keyframes, sde)
    if ts.size < 2:
        raise ValueError(f"the JKO path needs at least 2 keyframes, got {ts.size}")
    n_jko = math.ceil(float(flow_time(sde, ts[-1])) / h - 1e-9)
    if n_jko > LIMITS.jko_steps:  # refused before any work: the run time grows like 1 / h
        raise ValueError(
            f"JKO step h = {h:g} would take about {n_jko} JKO steps (limit {LIMITS.jko_steps}); "
            f"use h >= {float(sde.int_beta(sde.T)) / LIMITS.jko_steps:.3g}"
        )
    if bandwidth is not None and not bandwidth > 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
    payload = {
        "sde": sde.config(),
        "h": float(h),
        "ts": ts.tolist(),
        "bw": bandwidth,
        "bws": bandwidth_scale,
        "it": max_iter,
        "tol": tol,
        "cc": check_coupling,
        "v": 1,
    }
    key = _cache_key(x_np, payload)
    if cache and key in _MEMO:
        _MEMO.move_to_end(key)
        return copy.deepcopy(_MEMO[key])
    file = Path(cache_dir) / f"jko-{key}.npz" if cache_dir is not None else None
    shipped = PRECOMPUTED_DIR / f"jko-{key}.npz"  # read-only: precomputed for the presets
    if file is not None and file.exists():
        result = _load_path(file)
    elif cache and shipped.exists():
        result = _load_path(shipped)
    else:
        result = _run_jko(x_np, sde, float(h), ts, bandwidth, bandwidth_scale, max_iter, tol, check_coupling)
        result.meta["cache_key"] = key
        if file is not None:
            _save_path(result, file)
    if cache:
        _MEMO[key] = copy.deepcopy(result)
        while len(_MEMO) > _MEMO_SIZE:
            _MEMO.popitem(last=False)
    return result


def _run_jko(
    x_np: np.ndarray,
    sde: VPSDE,
    h: float,
    ts: np.ndarray,
    bandwidth: float | None,
    bandwidth_scale: float,
    max_iter: int,
    tol: float,
    check_coupling: bool,
) -> JKOPath:
    start = time.perf_counter()
    s_key = flow_time(sde, ts)
    x = torch.as_tensor(x_np)
    n_int = len(ts) - 1
    frames = [x_np.astype(np.float32)] if s_key[0] <= 0 else []
    disp = np.zeros(n_int)
    gaps = np.full(n_int, np.nan)
    steps = np.zeros(n_int, dtype=np.int64)
    bws = np.zeros(n_int)
    iters = 0
    vel: torch.Tensor | None = None
    s_prev = 0.0
    # the first keyframe may be after t = 0: flow there first (not reported as an interval)
    segments = [(s_prev, float(s_key[0]), -1)] if s_key[0] > 0 else []
    segments += [(float(s_key[i]), float(s_key[i + 1]), i) for i in range(n_int)]
    for a, b, idx in segments:
        m, step = _substeps(a, b, h)
        eps = float(bandwidth) if bandwidth is not None else blob_bandwidth(x, bandwidth_scale)
        length = 0.0
        for j in range(m):
            # predictor: the previous step's velocity, extrapolated (the flow is smooth in s)
            guess = None if vel is None else x + step * vel
            y, it = jko_step(x, step, eps, y0=guess, max_iter=max_iter, tol=tol)
            vel = (y - x) / step
            iters += it
            cost = float(((y - x) ** 2).sum(1).mean())
            length += math.sqrt(cost)
            if check_coupling and j == 0 and idx >= 0:
                gaps[idx] = cost - exact_w2(x, y) ** 2
            x = y
        if idx >= 0:
            disp[idx], steps[idx], bws[idx] = length, m, eps
        frames.append(x.numpy().astype(np.float32))
    particles = np.stack(frames)
    fe = np.array([free_energy_particles(p) for p in particles])
    eps_fe = bws if bandwidth is None else np.full(n_int, float(bandwidth))
    # the blob functional of each frame, with the bandwidth of the interval it starts (last: ends)
    fe_blob = np.array(
        [blob_free_energy(p, float(eps_fe[min(i, n_int - 1)])) for i, p in enumerate(particles)]
    )
    return JKOPath(
        t=ts,
        s=s_key,
        particles=particles,
        free_energy=fe,
        free_energy_blob=fe_blob,
        displacement=disp,
        coupling_gap=gaps,
        n_steps=steps,
        bandwidth=bws,
        iterations=iters,
        h=h,
        seconds=time.perf_counter() - start,
        meta={"method": "blob JKO, identity coupling, L-BFGS", "n": int(x_np.shape[0])},
    )


def preset_x0(name: str, n: int = PRESET_FLOW["n"], seed: int = PRESET_FLOW["seed"]) -> torch.Tensor:
    """The data particles of a preset density that :func:`preset_jko_path` starts from: (n, 2) float32."""
    from geoflow.densities import get_density

    return get_density(name).sample(int(n), torch.Generator().manual_seed(int(seed)))


def preset_jko_path(
    name: str,
    sde: VPSDE | None = None,
    *,
    n: int = PRESET_FLOW["n"],
    keyframes: int = PRESET_FLOW["keyframes"],
    h: float = PRESET_FLOW["h"],
    seed: int = PRESET_FLOW["seed"],
    cache_dir: str | Path | None = None,
) -> JKOPath:
    """The JKO path of a preset density from :func:`preset_x0` (instant for the shipped defaults).

    With the default VP SDE and the defaults of ``PRESET_FLOW``, the mixture presets are shipped in
    ``pretrained/flows/`` (written by :func:`write_preset_flows`); any other input is computed
    (about 3-10 s for 1000 particles on a laptop CPU) and cached in memory.
    """
    return jko_path(preset_x0(name, n, seed), sde or VPSDE(), h, keyframes, cache_dir=cache_dir)


def write_preset_flows(names: Sequence[str] | None = None) -> list[Path]:
    """Compute and ship the preset JKO paths to ``pretrained/flows/`` (float32 particles, small .npz)."""
    from geoflow.densities import PRESETS, get_density

    names = (
        list(names)
        if names is not None
        else [k for k in PRESETS if isinstance(get_density(k), GaussianMixture)]
    )
    written = []
    for name in names:
        # cache=False: compute (or reuse the file already shipped), never serve from memory unsaved
        path = jko_path(
            preset_x0(name),
            VPSDE(),
            PRESET_FLOW["h"],
            PRESET_FLOW["keyframes"],
            cache=False,
            cache_dir=PRECOMPUTED_DIR,
        )
        written.append(PRECOMPUTED_DIR / f"jko-{path.meta['cache_key']}.npz")
    # a human-readable index: which file holds which preset, and the inputs it was computed from
    index = {"inputs": {**PRESET_FLOW, "sde": VPSDE().config(), "x0": "preset_x0(name)"}}
    index["files"] = {name: f.name for name, f in zip(names, written, strict=True)}
    (PRECOMPUTED_DIR / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    return written


# =========================================================================== theorem check
def theorem_check(
    mixture: GaussianMixture,
    sde: VPSDE,
    *,
    n: int = 1000,
    keyframes: int | ArrayLike = 6,
    h: float = 0.05,
    dt: float = 2e-3,
    generator: torch.Generator | None = None,
) -> list[dict[str, float]]:
    """A numerical check of Theorems 1 and 2 on a mixture, as a table (one row per keyframe).

    Columns (all exact W2 by POT against fresh exact samples of ``mu_t``):

    * ``w2_forward_em``: forward Euler-Maruyama particles (the forward splitting path) -- the SDE;
    * ``w2_jko``: the blob JKO path -- the gradient flow of KL (Theorem 1 says these agree);
    * ``w2_reverse``: the reverse splitting path with the exact score, started from N(0, I) at T
      (Theorem 2: it retraces the same marginals backwards);
    * ``w2_floor``: two independent exact samples of the same n (the finite-sample floor);
    * ``*_given_x0``: the forward EM and JKO particles against the exact noising of the *same* data
      particles x0 (``a(t) x0 + s(t) z``), with its own floor; this removes the mode-weight noise of two
      independent data samples, which dominates the unconditional W2 at n ~ 1000;
    * ``free_energy_exact`` and ``free_energy_jko``.

    Agreement means each column is near its floor, down to it as h and dt shrink.
    """
    mixture = require_mixture(mixture, "the theorem check")
    sde = _require_vp(sde)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    ts = keyframe_times(keyframes, sde)
    x0 = mixture.sample(n, g).to(torch.float64)
    fwd = splitting_path(x0, sde, ts, direction="forward", dt=dt, generator=g).particles
    jko = jko_path(x0, sde, h, ts, cache=False).particles
    prior = sde.prior_sample((n, mixture.dim), g, dtype=torch.float64)
    rev = splitting_path(prior, sde, ts, direction="reverse", score_fn=mixture, dt=dt, generator=g)
    rev_p = rev.particles[::-1]  # back to increasing t
    ex1 = exact_marginal_samples(mixture, sde, ts, n, g)
    ex2 = exact_marginal_samples(mixture, sde, ts, n, g)
    # conditional on the data sample x0: removes the mode-weight noise of two independent data samples
    ex_a = exact_marginal_samples(mixture, sde, ts, n, g, x0=x0)
    ex_b = exact_marginal_samples(mixture, sde, ts, n, g, x0=x0)
    fe = free_energy_exact(mixture, ts, sde)
    rows = []
    for k, t in enumerate(ts):
        rows.append(
            {
                "t": float(t),
                "w2_forward_em": exact_w2(fwd[k], ex1[k]),
                "w2_jko": exact_w2(jko[k], ex1[k]),
                "w2_reverse": exact_w2(rev_p[k], ex1[k]),
                "w2_floor": exact_w2(ex2[k], ex1[k]),
                "w2_forward_em_given_x0": exact_w2(fwd[k], ex_a[k]),
                "w2_jko_given_x0": exact_w2(jko[k], ex_a[k]),
                "w2_floor_given_x0": exact_w2(ex_b[k], ex_a[k]),
                "free_energy_exact": float(fe[k]),
                "free_energy_jko": free_energy_particles(jko[k]),
            }
        )
    return rows
