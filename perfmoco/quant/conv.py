"""Discretised Fermi convolution model, batched over curves, with its Jacobian.

Continuous model: ``C(t) = integral_0^inf AIF(t - d - u) h(u) du`` with the
Fermi response ``h`` of :func:`perfmoco.quant.model.fermi_impulse`
(``h(0) = F``) and a delay ``d``.  The AIF is known only at the samples of a
uniform grid of step ``dt``; the integral is evaluated with the trapezoid
rule on a grid ``u_l = l * dt / m`` (``m = oversample``) that starts exactly at
the jump of ``h``, with the AIF interpolated by Catmull-Rom cubics.  Written
in polyphase form, ``l = j m + p``, each phase ``p`` is one coarse causal
convolution (a ``(T, T)`` matrix product) followed by a shift of
``d + p dt / m``: the whole-sample part of the shift goes into the argument of
``h``, the fractional part is a 4-tap Catmull-Rom filter.  The model is
continuously differentiable in ``d``, so the delay is fitted like the other
parameters.

Measured MBF bias on continuous-time curves (0.05 s grid, as the phantom)
sampled every 0.6 s, three Fermi shapes: ``m = 2``: 0.2-2.2 %, ``m = 3``:
0.1-1.0 %; rectangle rule without oversampling and linear interpolation:
0.4-3.1 %.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FermiConvolution", "fermi_and_grad"]


def fermi_and_grad(u, f, tau, k):
    """Fermi ``h/F`` at times ``u`` and ``dh/dtau``, ``dh/dk``.

    Parameters
    ----------
    u : ndarray, shape (N, T), s
    f, tau, k : ndarray, shape (N, 1)
        Amplitude (1/s), plateau width (s), decay rate (1/s).

    Returns
    -------
    base, dtau, dk : ndarray, shape (N, T)
        ``h / F`` (1 at ``u = 0``), ``dh/dtau`` and ``dh/dk`` (these two
        include the factor ``F``).
    """
    z = u - tau
    s = k * z
    np.minimum(s, 60.0, out=s)
    np.exp(s, out=s)
    s += 1.0
    np.reciprocal(s, out=s)  # s = 1 / (1 + exp(k (u - tau)))
    with np.errstate(over="ignore"):
        e0 = np.exp(np.minimum(-k * tau, 60.0))
    norm = 1.0 + e0
    es2 = 1.0 - s
    es2 *= s  # exp(.) s^2 = s (1 - s)
    base = norm * s
    dtau = es2 * (norm * k * f)
    dtau -= s * (e0 * k * f)
    z *= es2
    z *= -(norm * f)
    dk = s * (-tau * e0 * f)
    dk += z
    return base, dtau, dk


def _catmull_rom(x: np.ndarray, t: np.ndarray, *, derivative: bool):
    """Values of ``x`` (K, N, T) delayed by ``1 - t`` samples (``t`` (N, 1) in (0, 1]).

    ``out[..., i] = x(i - 1 + t)`` with Catmull-Rom interpolation; samples
    before the start are 0, after the end the last value.  With
    ``derivative``, also ``d out[0] / dt``.
    """
    t2, t3 = t * t, t * t * t
    w = (-0.5 * t + t2 - 0.5 * t3, 1.0 - 2.5 * t2 + 1.5 * t3,
         0.5 * t + 2.0 * t2 - 1.5 * t3, 0.5 * t3 - 0.5 * t2)  # taps x[i-2] .. x[i+1]
    out = _taps(x, w)
    if not derivative:
        return out, None
    dw = (-0.5 + 2.0 * t - 1.5 * t2, -5.0 * t + 4.5 * t2, 0.5 + 4.0 * t - 4.5 * t2,
          1.5 * t2 - t)
    return out, _taps(x[:1], dw)[0]


def _taps(x, w):
    """``sum_j w[j] x[i - 2 + j]`` along the last axis (0 before, last value after)."""
    out = x * w[2]
    out[..., 1:] += x[..., :-1] * w[1]
    out[..., 2:] += x[..., :-2] * w[0]
    out[..., :-1] += x[..., 1:] * w[3]
    out[..., -1:] += x[..., -1:] * w[3]
    return out


def _linear(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """As :func:`_catmull_rom` with linear interpolation (no derivative)."""
    out = x * t
    out[..., 1:] += x[..., :-1] * (1.0 - t)
    return out


class FermiConvolution:
    """Batched tissue curves ``C(F, tau0, k, d)`` for one AIF on a uniform grid.

    Parameters
    ----------
    aif : ndarray, shape (T,), mmol/l
        AIF samples every ``dt_s`` seconds.
    dt_s : float, keyword-only
        Grid step, s.
    oversample : int, keyword-only
        Quadrature points per grid step (1-4).
    min_delay_s : float, keyword-only
        Smallest delay that will be asked for (negative delays advance the
        AIF by whole samples internally).
    dtype : numpy dtype, keyword-only
        Working precision.
    """

    def __init__(self, aif, *, dt_s: float, oversample: int = 2, min_delay_s: float = 0.0,
                 dtype=np.float32):
        a = np.asarray(aif, np.float64)
        if not 1 <= int(oversample) <= 4:
            raise ValueError(f"oversample must be 1..4, got {oversample!r}")
        self.m = int(oversample)
        self.dt = float(dt_s)
        self.dtype = dtype
        self.t_n = a.size
        self.adv = int(np.ceil(max(0.0, -float(min_delay_s)) / self.dt))
        a_adv = np.concatenate([a[self.adv :], np.full(self.adv, a[-1])])
        lag = np.arange(a.size)[None, :] - np.arange(a.size)[:, None]  # row j, column i
        amat = np.where(lag >= 0, a_adv[np.clip(lag, 0, None)], 0.0)
        self.amat = (amat * self.dt / self.m).astype(dtype)  # quadrature weight folded in
        self.j = np.arange(a.size, dtype=dtype)[None, :]

    def __call__(self, p: np.ndarray, *, grad: bool = False):
        """Model curves for parameters ``p`` (N, 4) = ``(F, tau0, k, delay)``.

        Returns
        -------
        curves : ndarray, shape (N, T)
        jac : ndarray, shape (4, N, T) or None
            Derivatives with respect to F, tau0, k and delay (with ``grad``).
        """
        f, tau, k, d = (p[:, i : i + 1] for i in range(4))
        delta = self.dt / self.m
        out = np.zeros((p.shape[0], self.t_n), self.dtype)
        jac = np.zeros((4, p.shape[0], self.t_n), self.dtype) if grad else None
        rows = np.arange(p.shape[0])
        for ph in range(self.m):
            s = (d[:, 0].astype(np.float64) + self.adv * self.dt + ph * delta) / self.dt
            q = np.floor(s)
            t = (1.0 - (s - q)).astype(self.dtype)[:, None]  # Catmull-Rom position
            # whole-sample part q of the shift goes into h: h'[j] = h((j - q) dt + ph delta);
            # before the jump (j < q) u is pushed far out, where the Fermi is 0
            jq = self.j - q.astype(self.dtype)[:, None]
            uu = np.where(jq >= 0, jq * self.dt + ph * delta, 1e4).astype(self.dtype)
            base, dtau, dk = fermi_and_grad(uu, f, tau, k)
            if ph == 0:  # trapezoid: half weight on the jump sample
                inside = (q >= 0) & (q < self.t_n)
                r, qi = rows[inside], q[inside].astype(np.int64)
                for arr in (base, dtau, dk):
                    arr[r, qi] *= 0.5
            if grad:
                x = (np.concatenate([base, dtau, dk]) @ self.amat).reshape(3, -1, self.t_n)
                val, dval = _catmull_rom(x[:1], t, derivative=True)
                out += val[0] * f
                jac[0] += val[0]
                jac[1:3] += _linear(x[1:], t)  # an approximate Jacobian is enough for LM
                jac[3] -= dval * (f / self.dt)  # dt/dd = -1/dt
            else:
                val, _ = _catmull_rom((base @ self.amat)[None], t, derivative=False)
                out += val[0] * f
        return out, jac
