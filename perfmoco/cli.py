"""``perfmoco`` command line.  Nothing imports this module.

Every subcommand turns bad input into one clear line on stderr and exit
status 2 (never a traceback); ``--verbose`` shows the log.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import sys
import time
from pathlib import Path

from perfmoco import __version__
from perfmoco.config import ConfigError, load_config
from perfmoco.logs import quiet, shown
from perfmoco.study import StudyError

log = logging.getLogger("perfmoco")


class UsageError(Exception):
    """A problem with the command line or its files, reported as one line."""


def _overrides(args) -> dict[str, str]:
    overrides = {}
    for item in getattr(args, "set", None) or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--set expects section.key=value, got {item!r}")
        overrides[key.strip()] = value.strip()
    return overrides


def _config(args):
    return load_config(getattr(args, "config", None), overrides=_overrides(args))


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML settings (see config/perfmoco.yaml)")
    p.add_argument(
        "--set", action="append", metavar="SECTION.KEY=VALUE", help="override one setting"
    )


_PHANTOM_OPTIONS = {"n_dynamics": "--dynamics", "heart_scale": "--heart-scale", "seed": "--seed"}


def cmd_phantom(args) -> int:
    from perfmoco.io.files import MRD_SUFFIXES
    from perfmoco.io.paths import output_file
    from perfmoco.phantom import generate_phantom, write_phantom

    output_file(args.out, MRD_SUFFIXES)
    t0 = time.perf_counter()
    try:
        ph = generate_phantom(
            seed=args.seed, n_dynamics=args.dynamics, motion=args.motion, vendor=args.vendor,
            heart_scale=args.heart_scale,
        )
    except ValueError as exc:  # the library's argument names as the command's options
        raise UsageError(re.sub(r"\b(n_dynamics|heart_scale|seed)\b",
                                lambda m: _PHANTOM_OPTIONS[m[1]], str(exc)).replace(
                                    " or None", "")) from None
    write_phantom(ph, args.out)
    study = ph.study
    print(
        f"wrote {args.out} and {Path(args.out).with_suffix('.truth.npz')}: "
        f"{len(study.highres)} high-res slices + {'1 AIF slice' if study.aif else 'no AIF slice'}, "
        f"{study.highres[0].n_dynamics} dynamics, {study.highres[0].pd_images.shape[0]} PD frames "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    return 0


def _progress(total: int, desc: str):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="step", file=sys.stderr, leave=False)

    def step(msg: str) -> None:
        bar.set_postfix_str(msg[:40])
        bar.update(1)

    return bar, step


def cmd_correct(args) -> int:
    import numpy as np

    from perfmoco.io.files import (
        MRD_SUFFIXES,
        SERIES_SUFFIXES,
        read_study,
        write_series,
        write_study,
    )
    from perfmoco.io.paths import output_file
    from perfmoco.pipeline import process_study

    config = _config(args)
    study = read_study(args.input, config=config.mrd, pixel_spacing_mm=args.pixel_spacing)
    series_out = len(study.slices) == 1 and not args.output.lower().endswith(MRD_SUFFIXES)
    out = output_file(args.output, SERIES_SUFFIXES + MRD_SUFFIXES if len(study.slices) == 1
                      else MRD_SUFFIXES, inputs=(args.input,))
    if args.displacement:  # checked before the work, as the output
        output_file(args.displacement, (".npy",) if series_out else (".npz",),
                    what="--displacement", inputs=(args.input, args.output))
    bar, step = _progress(len(study.slices), f"correcting ({args.method})")
    result = process_study(study, config=config, method=args.method, quantify=False, progress=step)
    bar.close()
    if any(m is None for m in result.moco):  # the pipeline's "originals kept": not here
        raise UsageError("; ".join(m.replace("; originals kept", "") for m in result.messages)
                         + f"; nothing written to {out}" if result.messages
                         else "motion correction failed")
    if series_out:
        s0 = study.slices[0]
        write_series(out, result.moco[0].corrected, pixel_spacing_mm=s0.pixel_spacing_mm,
                     like=s0.source)
        if args.displacement:
            np.save(args.displacement, result.moco[0].displacement.astype(np.float32))
    else:
        write_study(result.corrected_study(), out)
        if args.displacement:
            fields = {}
            for s, m in zip(study.slices, result.moco):  # "slice 0 (highres)" [+ " PD"]
                fields[s.name] = m.displacement
                if m.pd_displacement.shape[0]:
                    fields[f"{s.name} PD"] = m.pd_displacement
            np.savez_compressed(args.displacement, **fields)
    print(result.summary_text())
    print(f"wrote {out}" + (f" and {args.displacement}" if args.displacement else ""))
    return 0


def cmd_replay(args) -> int:
    from perfmoco.io.files import MRD_SUFFIXES
    from perfmoco.io.paths import output_file
    from perfmoco.replay import replay

    if args.server and args.config:
        raise UsageError("--config is read here, not by the server; with --server give single "
                         "settings with --set (the server applies those it allows)")
    config = _config(args)
    output_file(args.output, MRD_SUFFIXES, inputs=(args.input,))
    with (quiet("perfmoco") if not args.verbose and not args.server  # its problems come
          else contextlib.nullcontext()):  # back as TEXT lines, printed below
        summary = replay(
            args.input, args.output, server=args.server, config_name=args.config_name,
            config=config, method=args.method, settings=_overrides(args) if args.server else None,
        )
    print(summary)
    if args.report:
        from perfmoco.report.cli import make_reports

        pages, errors = make_reports(args.output, config=config)
        for page in pages:
            print(f"wrote {page}")
        if errors:
            raise UsageError("; ".join(errors))
    if not summary.processed:
        print(f"perfmoco replay: the study was not processed; its images are in {args.output}",
              file=sys.stderr)
        return 1
    return 0


#: quantify_curves' argument names as ``perfmoco quantify`` spells them.
_QUANTIFY_OPTIONS = {"tissue_gd": "--gd", "aif_gd": "--aif", "dt_s": "--dt", "mask": "--mask",
                     "hematocrit": "--hematocrit"}


def cmd_quantify(args) -> int:
    import numpy as np

    from perfmoco.io.files import load_npy
    from perfmoco.io.paths import output_file
    from perfmoco.quant import quantify_curves

    output_file(args.output, (".npy",))
    mask = load_npy(args.mask) if args.mask else None
    try:
        mbf = quantify_curves(
            load_npy(args.gd), load_npy(args.aif), dt_s=args.dt, mask=mask,
            hematocrit=args.hematocrit, spillover=not args.no_spillover, rim_px=args.rim_px,
            interpolation=args.interpolation, denoise=not args.no_denoise,
        )
    except ValueError as exc:  # the library's argument names as the command's options
        raise UsageError(re.sub(r"\b(tissue_gd|aif_gd|dt_s|mask|hematocrit)\b",
                                lambda m: _QUANTIFY_OPTIONS[m[1]], str(exc))) from None
    np.save(args.output, mbf.astype(np.float32))
    vals = mbf[np.isfinite(mbf) & (mbf > 0)]
    med = float(np.median(vals)) if vals.size else float("nan")
    print(f"wrote {args.output}: {vals.size} pixels fitted, median MBF {med:.2f} ml/min/g")
    if not vals.size:
        print("perfmoco quantify: no pixel gave a usable fit: check that --dt is the curves' "
              "time step in s and that both are [Gd] in mmol/l", file=sys.stderr)
        return 1
    return 0


def cmd_train(args) -> int:
    from perfmoco.moco.train import train_main

    if args.max_steps is not None and args.max_steps < 1:
        raise UsageError(f"--max-steps must be at least 1, got {args.max_steps}")
    with shown("perfmoco.moco.train", "perfmoco.moco.data"):  # its phases, without -v
        weights = train_main(args.config, out_dir=args.out, resume=args.resume,
                             max_steps=args.max_steps)
    print(f"wrote {weights} (its run folder holds the checkpoint, history and validation)")
    return 0


def cmd_serve(args) -> int:
    from perfmoco.server import serve

    config = _config(args)
    host = config.server.host if args.host is None else args.host
    port = config.server.port if args.port is None else args.port
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be 0-65535 (0: any free port), got {port}")
    serve(host=host, port=port, config=config)
    return 0


def cmd_evaluate(args) -> int:
    from perfmoco.evaluate import evaluate
    from perfmoco.io.paths import output_folder

    output_folder(args.out)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    res = evaluate(
        n_studies=args.studies, seed=args.seed, methods=methods, out_dir=args.out,
        workers=args.workers, cohort_dir=args.cohort, motion=args.motion,
        scheduler=args.scheduler, config=_config(args),
    )
    md = Path(res.out_dir) / "results.md"
    print(md.read_text() if md.is_file() else res)
    print(f"wrote {', '.join(str(p) for p in res.files.values())}")
    return 0


def cmd_demo(args) -> int:
    from perfmoco.demo import run_demo

    run_demo(
        Path(args.out), config=_config(args), method=args.method, seed=args.seed,
        report=not args.no_report,
    )
    return 0


def cmd_batch(args) -> int:
    from perfmoco.batch import find_inputs, run_batch
    from perfmoco.io.paths import output_folder

    inputs = find_inputs(args.input)  # a wrong input folder leaves no output folder behind
    output_folder(args.output)
    result = run_batch(
        args.input, args.output, inputs=inputs, config=_config(args), method=args.method,
        scheduler=args.scheduler, workers=args.workers, report=args.report,
        pixel_spacing_mm=args.pixel_spacing,
    )
    print(result.summary_text())
    return 1 if result.failed or result.without_mbf else 0


def cmd_report(args) -> int:
    from perfmoco.report.cli import make_reports

    pages, errors = make_reports(args.input, output=args.output, config=_config(args))
    if errors and not Path(args.input).is_dir():  # the one file given cannot be read
        raise UsageError(errors[0])
    for page in pages:
        print(f"wrote {page}")
    for err in errors:
        print(f"perfmoco report: error: {err}", file=sys.stderr)
    return 1 if errors else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    p = argparse.ArgumentParser(
        prog="perfmoco",
        description="Motion correction and MBF mapping for free-breathing stress perfusion CMR.",
    )
    p.add_argument("--version", action="version", version=f"perfmoco {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="show the log on stderr")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", help="phantom study -> correction -> MBF maps, with a summary")
    d.add_argument("-o", "--out", default="out/demo", help="output folder (default out/demo)")
    d.add_argument("--method", default="dl", choices=["none", "dl", "iterative"])
    d.add_argument("--seed", type=int, default=2024, help="phantom seed")
    d.add_argument("--no-report", action="store_true", help="skip the QA report (HTML)")
    _add_config_args(d)
    d.set_defaults(func=cmd_demo)

    ph = sub.add_parser("phantom", help="write a synthetic dual-sequence study + its truth")
    ph.add_argument("out", help="output MRD file (.h5); truth goes to OUT.truth.npz")
    ph.add_argument("--seed", type=int, default=0)
    ph.add_argument("--dynamics", type=int, default=None, help="dynamics (default 60-75)")
    ph.add_argument("--motion", default="breathing",
                    choices=["none", "breathing", "breathing+gasp", "mistrigger"])
    ph.add_argument("--vendor", default="a", choices=["a", "b"])
    ph.add_argument("--heart-scale", type=float, default=1.0,
                    help="heart size against the usual one, 0.7-1.5 (e.g. 1.35: a large heart)")
    ph.set_defaults(func=cmd_phantom)

    c = sub.add_parser("correct", help="motion-correct a series (.npy, NIfTI) or a study (.h5)")
    c.add_argument("input", help="(T, Y, X) .npy, NIfTI (X, Y, T) or MRD .h5")
    c.add_argument("-o", "--output", required=True, help="corrected output (same kinds)")
    c.add_argument("--displacement", help="also write the displacement (.npy / .npz), pixels")
    c.add_argument("--method", default="dl", choices=["none", "dl", "iterative"])
    c.add_argument("--pixel-spacing", type=float, default=None, metavar="MM",
                   help="pixel size in mm of a series file (npy: it has none, 2 mm is "
                        "assumed; NIfTI: instead of its header's); of an MRD study's "
                        "high-resolution slices, the AIF slice's scaled with it")
    _add_config_args(c)
    c.set_defaults(func=cmd_correct)

    r = sub.add_parser("replay", help="run an MRD file through the pipeline (or a server)")
    r.add_argument("input", help="MRD .h5 with reconstructed images")
    r.add_argument("-o", "--output", required=True, help="MRD .h5 to write the results to")
    r.add_argument("--server", help="HOST:PORT of a running MRD server (default: in-process)")
    r.add_argument("--config-name", default="perfmoco", help="config name sent to the server")
    r.add_argument("--report", action="store_true", help="also write a QA report (HTML)")
    r.add_argument("--method", default=None, choices=["none", "dl", "iterative"],
                   help="correction method (default: the config's server.method, dl)")
    _add_config_args(r)
    r.set_defaults(func=cmd_replay)

    q = sub.add_parser("quantify", help="Fermi MBF map from [Gd] curves (research use)")
    q.add_argument("--gd", required=True, help="tissue [Gd] (T, Y, X) .npy, mmol/l")
    q.add_argument("--aif", required=True, help="AIF [Gd] (T,) .npy, mmol/l")
    q.add_argument("--dt", type=float, required=True, help="time step of the curves, s")
    q.add_argument("--mask", help="(Y, X) .npy of pixels to fit (default: all)")
    q.add_argument("--hematocrit", type=float, default=None, metavar="H",
                   help="blood hematocrit as a fraction (e.g. 0.42): the AIF is divided by "
                        "1 - H (blood to plasma [Gd]); default: the AIF as given")
    q.add_argument("--no-spillover", action="store_true",
                   help="do not fit a blood fraction on pixels near the cavity of a ring mask")
    q.add_argument("--rim-px", type=int, default=2, choices=(1, 2, 3, 4),
                   help="pixels this near the cavity (chessboard distance; 1: touching it) fit "
                        "the blood fraction (default 2, the reach of an image's point-spread)")
    q.add_argument("--interpolation", type=float, default=1.0,
                   help="display pixels per acquired pixel of the maps (k-space zero-filling; "
                        "scales --rim-px and the core depth); 0: read it from the curves' "
                        "spectrum; default 1 (as acquired)")
    q.add_argument("--no-denoise", action="store_true",
                   help="fit the measured curves as they are (default: projected onto the "
                        "temporal components that stand out of the noise)")
    q.add_argument("-o", "--output", required=True, help="MBF map .npy, ml/min/g")
    q.set_defaults(func=cmd_quantify)

    t = sub.add_parser("train", help="train one motion-correction stage")
    t.add_argument("--config", required=True, type=Path, help="config/train/<stage>.yaml")
    t.add_argument("-o", "--out", type=Path, default=None, help="run folder (default from config)")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    t.add_argument("--max-steps", type=int, default=None)
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("serve", help="standalone MRD streaming server")
    s.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=None, help="port (default 9002)")
    _add_config_args(s)
    s.set_defaults(func=cmd_serve)

    e = sub.add_parser("evaluate", help="the paper's comparison on a phantom cohort")
    e.add_argument("--studies", type=int, default=5)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--methods", default="none,dl", help="comma list of none,dl,iterative")
    e.add_argument("-o", "--out", type=Path, default=Path("out/evaluate"))
    e.add_argument("--workers", type=int, default=None, help="Dask workers (default 2)")
    e.add_argument("--cohort", type=Path, default=None,
                   help="read studies (*.h5 + *.truth.npz) from this folder instead")
    e.add_argument("--motion", default="breathing",
                   choices=["none", "breathing", "breathing+gasp", "mistrigger"])
    e.add_argument("--scheduler", default=None, help="address of a running Dask scheduler")
    _add_config_args(e)
    e.set_defaults(func=cmd_evaluate)

    b = sub.add_parser("batch", help="every study of a folder through the pipeline (Dask)")
    b.add_argument("input", help="folder of MRD .h5 studies (and .npy / NIfTI series)")
    b.add_argument("-o", "--output", required=True, help="output folder (resumable)")
    b.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="a running Dask scheduler (default: a local cluster)")
    b.add_argument("--workers", type=int, default=None,
                   help="local worker processes (default min(2, CPUs))")
    b.add_argument("--method", default="dl", choices=["none", "dl", "iterative"])
    b.add_argument("--report", action="store_true", help="also write a QA report per study")
    b.add_argument("--pixel-spacing", type=float, default=None, metavar="MM",
                   help="pixel size in mm of a series file (npy: it has none, 2 mm is "
                        "assumed; NIfTI: instead of its header's)")
    _add_config_args(b)
    b.set_defaults(func=cmd_batch)

    rp = sub.add_parser("report", help="QA report (HTML) of a result .h5 or a batch folder")
    rp.add_argument("input", help="result .h5 (batch / replay / demo) or a batch output folder")
    rp.add_argument("-o", "--output", default=None,
                    help="OUT.html for one result file (default beside the input)")
    _add_config_args(rp)
    rp.set_defaults(func=cmd_report)
    for command in sub.choices.values():  # -v after the command too
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                             help="show the log on stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``perfmoco`` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except (UsageError, StudyError, ConfigError, ValueError, OSError) as exc:
        if args.verbose:
            log.exception("details")
        print(f"perfmoco {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"perfmoco {args.command}: error: a required part is not installed ({exc})",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"perfmoco {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
