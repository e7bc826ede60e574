"""The projection T of the paper's predict-project step (method.md section 3).

Projections ``T`` (all follow :class:`geoflow.samplers.Projection`, one NFE per call):

* ``"learned"``: a :class:`ProjectionModel` trained with the score network frozen on method.md's
  loss ``|| x_pred + T - a(t') x_0 ||^2 + (sqrt(b) / 2) || T ||^2``
  (``geoflow.train.train_projection``).
* ``"tweedie"``: the training-free approximation of the loss's pointwise optimum,
  ``T(x) = (2 / (2 + c)) s(t')^2 s_theta(x, t')`` with ``c = sqrt(b)``.
* ``"exact"``: the same formula with the exact score of a Gaussian mixture.

The samplers that use a T live in ``geoflow.predict_project``.
"""

from __future__ import annotations

import hashlib
import json

import torch
from torch import nn

from geoflow.nets import build_net, net_config
from geoflow.samplers import Projection
from geoflow.score import ScoreFn, batch_time
from geoflow.sde import SDE, append_dims, paper_beta, sde_from_config

PROJECTION_KINDS = ("learned", "tweedie", "exact")
TRAIN_MODES = ("random_dt", "fixed_N")


def shrink_factor(sde: SDE, t: torch.Tensor) -> torch.Tensor:
    """``2 / (2 + c)`` with ``c = sqrt(beta(t))`` (beta = g^2 / 2): the optimum's factor, shape of t."""
    return 2.0 / (2.0 + torch.sqrt(paper_beta(sde, t)))


def _scal(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-sample (B,) tensor broadcast against x (B, *D) in x's dtype and device."""
    return append_dims(v.to(device=x.device, dtype=x.dtype), x.ndim)


def score_fingerprint(score_model: nn.Module) -> str:
    """sha256 of a score model's config and weights: what a projection network is tied to.

    Independent of the file it was loaded from (a retrained or different score network changes it).
    """
    h = hashlib.sha256(json.dumps(score_model.config(), sort_keys=True).encode())  # type: ignore[operator]
    for k, v in sorted(score_model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- the network
class ProjectionModel(nn.Module):
    """The projection network ``T_theta(x, t')`` of method.md section 3, tied to one score network.

    The raw network sees the scaled input ``c_in(t') x`` and ``t' = t - dt`` (method.md conditions
    T on t - dt); its output ``f`` is turned into a displacement with the optimum's known factor
    and the step's own length scale:

        T(x, t, t') = -(2 / (2 + c(t))) * s(t) * f(c_in(t') x, t'),   c = sqrt(beta(t)).

    The output scale is ``s(t)``, not ``s(t')``: a large step leaves x_pred off the marginal at t'
    by up to the noise level it started from (at the last step ``s(t') ~ 0`` while the optimum
    does not vanish). Training can start from the score network's weights (warm start, same
    architecture): then ``f`` starts as the eps-prediction at t', i.e. ``s(t) / s(t')`` times the
    training-free (Tweedie) projection.

    Args:
        net: raw network ``f(x, t)`` (``geoflow.nets.build_net`` family), output shaped like x.
        sde: the forward SDE (must be the score network's).
        data_std: input scaling, as in :class:`geoflow.score.ScoreModel`.
        score_sha256: :func:`score_fingerprint` of the score network it was trained with.
        score_name: human-readable name of that score network (a pretrained name or a file).
        train_mode: ``"random_dt"`` (one T for every step size) or ``"fixed_N"`` (one grid).
        n_steps: the grid's N for ``fixed_N``.
        meta: free-form JSON-able facts (training summary...).
    """

    def __init__(
        self,
        net: nn.Module,
        sde: SDE,
        data_std: float = 1.0,
        score_sha256: str | None = None,
        score_name: str | None = None,
        train_mode: str = "random_dt",
        n_steps: int | None = None,
        meta: dict | None = None,
    ) -> None:
        super().__init__()
        check_train_mode(train_mode, n_steps)
        self.net, self.sde, self.data_std = net, sde, float(data_std)
        self.score_sha256, self.score_name = score_sha256, score_name
        self.train_mode, self.n_steps = train_mode, n_steps
        self.meta = dict(meta or {})

    def forward(self, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
        """``T(x_pred, t, t')``: x (B, *D), t and t' (B,) -> displacement (B, *D)."""
        tb, tn = batch_time(t, x), batch_time(t_next, x)
        a, s = self.sde.alpha(tn), self.sde.sigma(tn)
        c_in = 1.0 / torch.sqrt(a * a * self.data_std**2 + s * s)
        f = self.net(x * _scal(c_in, x), tn.to(x.dtype))
        return -_scal(shrink_factor(self.sde, tb) * self.sde.sigma(tb), x) * f

    def check_matches(self, score_model: nn.Module, what: str = "the score network") -> None:
        """Raise ``ValueError`` unless ``score_model`` is the network this T was trained with."""
        if self.sde.config() != score_model.sde.config():  # type: ignore[union-attr]
            raise ValueError(
                f"projection network was trained for SDE {self.sde.config()}, "
                f"but {what} uses {score_model.sde.config()}"  # type: ignore[union-attr]
            )
        got = score_fingerprint(score_model)
        if self.score_sha256 is not None and got != self.score_sha256:
            raise ValueError(
                f"projection network does not match {what}: it was trained with score network "
                f"{self.score_name or '?'} (sha256 {self.score_sha256[:12]}), got sha256 {got[:12]}; "
                "train one for this score network with `geoflow train-projection`"
            )

    def config(self) -> dict:
        """Everything needed to rebuild the model around its state dict (``kind = "projection"``)."""
        return {
            "kind": "projection",
            "net": net_config(self.net),
            "sde": self.sde.config(),
            "data_std": self.data_std,
            "score_sha256": self.score_sha256,
            "score_name": self.score_name,
            "train_mode": self.train_mode,
            "n_steps": self.n_steps,
            "meta": self.meta,
        }

    @classmethod
    def from_config(cls, cfg: dict) -> ProjectionModel:
        """Inverse of :meth:`config` (weights not loaded)."""
        try:
            return cls(
                build_net(cfg["net"]),
                sde_from_config(cfg["sde"]),
                data_std=cfg.get("data_std", 1.0),
                score_sha256=cfg.get("score_sha256"),
                score_name=cfg.get("score_name"),
                train_mode=cfg.get("train_mode", "random_dt"),
                n_steps=cfg.get("n_steps"),
                meta=cfg.get("meta"),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"projection model config is incomplete or malformed: {e}") from None


def check_train_mode(mode: str, n_steps: int | None) -> None:
    if mode not in TRAIN_MODES:
        raise ValueError(f"unknown projection training mode {mode!r}; valid: {', '.join(TRAIN_MODES)}")
    if mode == "fixed_N" and (not isinstance(n_steps, int) or n_steps < 2):
        raise ValueError(f"fixed_N training needs n_steps >= 2 (the sampling grid's N), got {n_steps!r}")


# --------------------------------------------------------------------------- projections
class LearnedProjection:
    """``T = T_theta(x_pred, t, t')`` from a trained :class:`ProjectionModel` (1 NFE per call)."""

    nfe_per_call = 1

    def __init__(self, model: ProjectionModel) -> None:
        self.model = model

    @torch.no_grad()
    def __call__(self, x_pred: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
        return self.model(x_pred, t, t_next)


class TweedieProjection:
    """Training-free projection ``T(x) = (2 / (2 + c)) s(t')^2 score(x, t')``, ``c = sqrt(beta(t))``.

    method.md section 3: the loss's pointwise optimum ``(2/(2+c)) (E[x_mean | x_pred] - x)`` with
    ``E[x_mean | x_pred]`` replaced by Tweedie's estimate at t'. With a mixture's exact score it is
    the exact-score projection. One score evaluation (1 NFE) per call.
    """

    nfe_per_call = 1

    def __init__(self, score_fn: ScoreFn, sde: SDE) -> None:
        self.score_fn, self.sde = score_fn, sde

    @torch.no_grad()
    def __call__(self, x_pred: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
        tb, tn = batch_time(t, x_pred), batch_time(t_next, x_pred)
        s2 = self.sde.sigma(tn) ** 2
        return _scal(shrink_factor(self.sde, tb) * s2, x_pred) * self.score_fn(x_pred, tn)


def make_projection(
    kind: str, *, score_fn: ScoreFn, sde: SDE, model: ProjectionModel | None = None
) -> Projection:
    """A projection hook by kind.

    Args:
        kind: ``"learned"`` (needs ``model``), ``"tweedie"`` (uses ``score_fn``, the score network),
            or ``"exact"`` (pass a mixture's exact score as ``score_fn``).
        score_fn: ``score(x, t)``, t of shape (B,).
        sde: the forward SDE.
        model: the trained projection network for ``"learned"``.
    """
    if kind not in PROJECTION_KINDS:
        raise ValueError(f"unknown projection {kind!r}; valid: {', '.join(PROJECTION_KINDS)}")
    if kind == "learned":
        if model is None:
            raise ValueError("the learned projection needs a trained projection network (model=...)")
        return LearnedProjection(model)
    return TweedieProjection(score_fn, sde)
