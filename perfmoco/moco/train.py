"""Unsupervised training of the three stages (``perfmoco train --config ...``).

One run trains one stage (``affine1``, ``affine2`` or ``dense``), as the
paper describes; the earlier stages' checkpoints (``previous_dir``) produce
its inputs, exactly as at run time (:meth:`MotionCorrector.stage_inputs`).

Losses (``monai.losses`` for MI / LNCC / bending energy):

* ``affine1``: ``0.5 * -NCC(L_f, T(L_m)) + 0.25 * -NMI(L_f, T(I_m))
  + 0.25 * -NMI(I_f, T(L_m))`` with ``L`` the RPCA low-rank frames (inexact
  ALM, cached) and ``I`` the frames; the fixed frame is the reference (T-10).
* ``affine2``: ``-NCC`` to the PCA synthetic reference frame.
* ``dense``: ``-LNCC`` (kernel 19) ``+ 10 * bending energy``.

The phantom's true motion is never used for training: only for the
validation metrics written to the log and the checkpoint.  Selection of the
best checkpoint uses the unsupervised validation loss.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from perfmoco.moco import networks
from perfmoco.moco.augment import apply_affine, intensity_augment, random_affine, random_fov_cut
from perfmoco.moco.checks import torch_device
from perfmoco.moco.data import load_series
from perfmoco.moco.decompose import rpca_lowrank_cached
from perfmoco.moco.losses import stage_loss
from perfmoco.moco.pipeline import MotionCorrector
from perfmoco.moco.preprocess import histogram_equalise
from perfmoco.moco.train_config import DEFAULTS, load_train_config

__all__ = ["DEFAULTS", "load_train_config", "train_main"]

log = logging.getLogger(__name__)

def _corrector(cfg: dict, stage: str, device: torch.device) -> MotionCorrector:
    """Earlier stages from ``previous_dir`` (``shipped``: the package's), this and later
    stages identity.
    """
    from perfmoco.moco.pipeline import WEIGHTS_DIR

    prev = (WEIGHTS_DIR if cfg["previous_dir"] == "shipped"
            else Path(cfg["previous_dir"] or cfg["out_dir"]))
    models = {}
    for s in networks.STAGES:
        if networks.STAGES.index(s) < networks.STAGES.index(stage):
            path = prev / f"{s}.pt"
            if not path.is_file():
                raise FileNotFoundError(f"stage {stage} needs the trained {s} first: {path}")
            models[s] = networks.load(path, device=device)[0]
        else:
            models[s] = networks.RegNet(networks.default_spec(s)).to(device)
    return MotionCorrector(models, device=device)


def _init_from(net: networks.RegNet, init: str, stage: str) -> None:
    """Load starting weights (fine-tuning) from ``init``: a path or ``"shipped"``."""
    from perfmoco.moco.pipeline import WEIGHTS_DIR

    path = WEIGHTS_DIR / f"{stage}.pt" if init == "shipped" else Path(init)
    if not path.is_file():
        raise FileNotFoundError(f"init weights for stage {stage} not found: {path}")
    start, _ = networks.load(path, device="cpu")
    if start.spec != net.spec:
        raise ValueError(f"init weights {path} have another network spec than this stage's")
    net.load_state_dict(start.state_dict())
    log.info("stage %s starts from %s", stage, path)


def _pool(series_list, mc: MotionCorrector, stage: str, cache_dir: str | None) -> dict:
    """Stack every series' stage inputs (and RPCA low-rank for affine1)."""
    mov, fix, low_m, low_f = [], [], [], []
    for s in series_list:
        d = mc.stage_inputs(s, stage)
        mov.append(d["moving"])
        fix.append(d["fixed"])
        if stage == "affine1":
            low = rpca_lowrank_cached(d["moving"], cache_dir=cache_dir).clamp(0, 1)
            r = d["reference_index"]
            low_m.append(low)
            low_f.append(low[r : r + 1].expand_as(low))
    pool = {"moving": torch.cat(mov), "fixed": torch.cat(fix)}
    if stage == "affine1":
        pool["low_moving"] = torch.cat(low_m)
        pool["low_fixed"] = torch.cat(low_f)
    return pool


def _batch(pool: dict, idx: torch.Tensor) -> dict:
    return {k: v[idx][:, None] for k, v in pool.items()}


def _step_loss(net, b: dict, stage: str, cfg: dict, gen: torch.Generator | None, train: bool,
               cut_gen: torch.Generator | None = None):
    """Loss of one batch (augmented when ``train``; field-of-view cuts from ``cut_gen``
    also when not: the validation's fixed cuts).
    """
    aug = cfg["augment"]
    mov, fix = b["moving"], b["fixed"]
    low_m, low_f = b.get("low_moving"), b.get("low_fixed")
    if train and stage != "dense":
        m = random_affine(
            mov.shape[0],
            mov.shape[-1],
            max_shift_px=aug["max_shift_px"],
            max_rotation_rad=aug["max_rotation_rad"],
            p=aug["p_geometric"],
            generator=gen,
            device=mov.device,
        )
        mov = apply_affine(mov, m)
        if low_m is not None:
            low_m = apply_affine(low_m, m)
    mask = None
    cut_gen = gen if train else cut_gen
    if aug["fov_cut_p"] > 0 and cut_gen is not None:
        # the image's edge stays put while the heart moves: the same cut in both crops
        mask = random_fov_cut(mov.shape[0], mov.shape[-1], p=aug["fov_cut_p"] if train else 1.0,
                              min_px=aug["fov_cut_min_mm"] / net.crop_spacing_mm,
                              generator=cut_gen, device=mov.device)
        mov, fix = mov * mask, fix * mask
        if low_m is not None:
            low_m, low_f = low_m * mask, low_f * mask
    m_in = histogram_equalise(mov[:, 0])[:, None]
    f_in = histogram_equalise(fix[:, 0])[:, None]
    if train:
        kw = {"noise_sd": aug["noise_sd"], "scale": aug["scale"], "shift": aug["shift"]}
        m_in = intensity_augment(m_in, generator=gen, **kw)
        f_in = intensity_augment(f_in, generator=gen, **kw)
    ddf = net(m_in, f_in)
    return stage_loss(
        stage,
        ddf,
        moving=mov,
        fixed=fix,
        low_moving=low_m,
        low_fixed=low_f,
        lncc_kernel=cfg["loss"]["lncc_kernel"],
        bending_weight=cfg["loss"]["bending_weight"],
        mask=mask,
    )


def _validate(net, mc, val_pool, val_series, stage, cfg) -> dict:
    """Unsupervised val loss + (phantom only) ground-truth metrics of the pipeline."""
    from perfmoco.moco.evaluate import truth_metrics

    net.eval()
    losses, cut_losses = [], []
    cutting = cfg["augment"]["fov_cut_p"] > 0
    cut_gen = torch.Generator().manual_seed(12345)  # the same cuts at every validation
    with torch.no_grad():
        n = val_pool["moving"].shape[0]
        for i in range(0, n, 64):
            idx = torch.arange(i, min(i + 64, n), device=val_pool["moving"].device)
            b = _batch(val_pool, idx)
            losses.append(float(_step_loss(net, b, stage, cfg, None, False)))
            if cutting:
                cut_losses.append(float(_step_loss(net, b, stage, cfg, None, False, cut_gen)))
    out = {"val_loss": float(np.mean(losses))}
    if cutting:  # selection weighs both: the cut pairs as often as training cuts them
        p = cfg["augment"]["fov_cut_p"]
        out["val_loss_uncut"] = out["val_loss"]
        out["val_loss_cut"] = float(np.mean(cut_losses))
        out["val_loss"] = (1 - p) * out["val_loss_uncut"] + p * out["val_loss_cut"]
    mc.models[stage] = net
    m = [truth_metrics(mc.correct(s), t, s) for s, t in val_series if t is not None]
    if m:
        for k in m[0]:
            out[k] = float(np.nanmean([x[k] for x in m]))
    net.train()
    return out


def train_main(
    config_path: str | Path,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    max_steps: int | None = None,
) -> Path:
    """Train one stage from a YAML config; returns the best checkpoint's path.

    Parameters
    ----------
    config_path : str or Path
        ``config/train/<stage>.yaml`` (see :data:`DEFAULTS` for the keys).
    out_dir : str or Path, keyword-only, optional
        Overrides the config's ``out_dir`` (checkpoints, log, metrics).
    resume : bool, keyword-only
        Continue from ``<out_dir>/<stage>_state.pt``.
    max_steps : int, keyword-only, optional
        Overrides ``steps`` (e.g. a smoke run).

    Returns
    -------
    Path
        ``<out_dir>/<stage>.pt``, the checkpoint with the lowest validation loss.
    """
    from tqdm import tqdm

    cfg = load_train_config(config_path)
    if out_dir is not None:
        cfg["out_dir"] = str(out_dir)
    if max_steps is not None:
        cfg["steps"] = int(max_steps)
    stage = cfg["stage"]
    out = Path(cfg["out_dir"])
    if resume and not (out / f"{stage}_state.pt").is_file():
        raise FileNotFoundError(f"--resume: no checkpoint {out / f'{stage}_state.pt'} to "
                                f"continue from (train without --resume to start)")
    out.mkdir(parents=True, exist_ok=True)
    later = [f"{s}.pt" for s in networks.STAGES[networks.STAGES.index(stage) + 1:]
             if (out / f"{s}.pt").is_file()]
    if later:  # their inputs came from this stage's earlier weights
        log.warning("%s holds %s, trained on the %s this run replaces: train them again "
                    "after it", out, " and ".join(later), stage)
    torch.manual_seed(cfg["seed"])
    if cfg["threads"]:
        torch.set_num_threads(int(cfg["threads"]))
    # MONAI's Parzen-window MI produces denormal floats, 1.5x slower on CPU
    torch.set_flush_denormal(True)
    dev = torch_device(cfg["device"])
    t0 = time.time()
    train_series, val_series = load_series(cfg["data"])  # before torch threads spin up
    log.info(
        "stage %s on %s: %d train / %d val series", stage, dev, len(train_series), len(val_series)
    )
    mc = _corrector(cfg, stage, dev)
    cache = cfg["data"]["cache_dir"] or None
    pool = _pool([s for s, _ in train_series], mc, stage, cache)
    val_pool = _pool([s for s, _ in val_series], mc, stage, cache)
    t_data = time.time() - t0
    log.info("data ready in %.0f s: %d training frames", t_data, pool["moving"].shape[0])

    spec = {**networks.default_spec(stage), **cfg["spec"]}
    net = networks.RegNet(spec).to(dev).train()
    if cfg["init"] and not resume:
        _init_from(net, cfg["init"], stage)
    opt = torch.optim.Adam(net.parameters(), lr=float(cfg["lr"]))
    gen = torch.Generator().manual_seed(int(cfg["seed"]))
    state_path = out / f"{stage}_state.pt"
    start, best, history, steps_before = 0, float("inf"), [], 0.0
    if resume and state_path.is_file():
        st = torch.load(state_path, map_location="cpu", weights_only=False)
        net.load_state_dict(st["model"])
        opt.load_state_dict(st["optim"])
        gen.set_state(st["generator"])
        start, best, history = st["step"], st["best"], st["history"]
        steps_before = st.get("step_seconds", 0.0)
        log.info("resumed %s at step %d", stage, start)

    def info(step: int, metrics: dict) -> dict:
        return {
            "config": cfg,
            "step": step,
            "metrics": metrics,
            "hardware": (torch.cuda.get_device_name(dev) if dev.type == "cuda"
                         else f"cpu, {torch.get_num_threads()} threads"),
            "train_seconds": time.time() - t0,
            "data_seconds": t_data,
            "step_seconds": t_steps,  # all steps' optimisation alone (no validation, saving)
        }

    def checkpoint(done: int) -> None:
        """The last weights and the state ``--resume`` continues from (written whole)."""
        networks.save(out / f"{stage}_last.pt", net, stage=stage,
                      train_info=info(done, history[-1] if history else {}))
        part = state_path.with_name(state_path.name + ".part")
        torch.save({"model": net.state_dict(), "optim": opt.state_dict(),
                    "generator": gen.get_state(), "step": done, "best": best,
                    "history": history, "step_seconds": t_steps}, part)
        part.replace(state_path)

    n_frames = pool["moving"].shape[0]
    t_train, t_steps = time.time(), steps_before
    bar = tqdm(
        range(start, cfg["steps"]), initial=start, total=cfg["steps"], desc=stage, mininterval=5.0
    )
    done = start
    try:
        for step in bar:
            t_step = time.perf_counter()
            idx = torch.randint(n_frames, (int(cfg["batch_size"]),), generator=gen).to(dev)
            loss = _step_loss(net, _batch(pool, idx), stage, cfg, gen, True)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t_steps += time.perf_counter() - t_step
            done = step + 1
            over = cfg["time_limit_min"] and time.time() - t_train > 60.0 * cfg["time_limit_min"]
            if over:
                cfg["steps"] = done  # the last step: validate and checkpoint below
            if done % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}")
            if done % cfg["val_every"] == 0 or done == cfg["steps"]:
                metrics = _validate(net, mc, val_pool, val_series, stage, cfg)
                metrics.update(step=done, train_loss=loss.item(), seconds=round(time.time() - t0))
                history.append(metrics)
                log.info("%s step %d: %s", stage, done, json.dumps(metrics))
                if metrics["val_loss"] < best:
                    best = metrics["val_loss"]
                    networks.save(out / f"{stage}.pt", net, stage=stage,
                                  train_info=info(done, metrics))
            if done % cfg["ckpt_every"] == 0 or done == cfg["steps"]:
                checkpoint(done)
            if over:
                log.warning("%s: time limit (time_limit_min %g) reached at step %d",
                            stage, cfg["time_limit_min"], done)
                break
    except KeyboardInterrupt:  # Ctrl-C: keep what was trained, say where
        bar.close()
        checkpoint(done)
        (out / f"{stage}_history.json").write_text(json.dumps(history, indent=1))
        log.warning("%s: interrupted at step %d; its weights are in %s and --resume continues "
                    "from %s", stage, done, out / f"{stage}_last.pt", state_path)
        raise
    bar.close()
    (out / f"{stage}_history.json").write_text(json.dumps(history, indent=1))
    if not (out / f"{stage}.pt").is_file():  # zero steps asked: keep the (identity) net
        networks.save(out / f"{stage}.pt", net, stage=stage, train_info=info(start, {}))
    return out / f"{stage}.pt"


def main(argv: list[str] | None = None) -> int:
    """``python -m perfmoco.moco.train CONFIG [--out-dir D] [--resume] [--max-steps N]``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("--out-dir", default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--max-steps", type=int, default=None)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    path = train_main(a.config, out_dir=a.out_dir, resume=a.resume, max_steps=a.max_steps)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
