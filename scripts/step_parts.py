#!/usr/bin/env python
"""What bounds a data-parallel training epoch: one step whole, in parts, and in workers.

    python scripts/step_parts.py [--workers 2] [--batch 128] [--repeats 60] [--json F]

Times, on the lecture CNN with fresh weights (float32, one BLAS thread in every process),
the plain training step of ``train.fit`` (cross-entropy, its weight gradient, the logits'
accuracy; no optimizer update) by median of ``--repeats`` calls:

- ``whole``: one step of ``--batch`` images in this process;
- ``part``: one step of ``batch / workers`` images in this process (what each worker does);
- ``in_workers``: the step of ``--batch`` images cut into ``--workers`` parts, one per
  worker process, as ``fit(..., workers=W)`` takes it (``parallel.Lockstep``: weights out,
  gradients back through shared memory, the parts' gradients weighted and summed here).

and then one epoch of 60,000 images (``fit(epochs=1)``) in one process and with
``workers=W`` (the workers' start and the images' hand-over included). ``in_workers`` can
be no faster than ``part``: the epoch at W workers is at least ``steps x part``, whatever
the hand-over costs. The numbers are this machine's at that moment (medians; run it on an
otherwise idle machine).
"""
import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
sys.path.insert(0, ROOT)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--batch", type=int, default=128, help="images per step (default 128)")
    p.add_argument("--repeats", type=int, default=60, help="timed calls per step kind (default 60)")
    p.add_argument("--no-epoch", action="store_true", help="time the steps only")
    p.add_argument("--data", default=None, help="folder with the MNIST files")
    p.add_argument("--json", default=None, help="write the timings as JSON here (atomic)")
    a = p.parse_args(argv)
    if a.workers < 2:
        p.error(f"--workers: expected an integer >= 2, got {a.workers}")
    if a.batch < a.workers:
        p.error(f"--batch: expected at least --workers ({a.workers}) images, got {a.batch}")
    if a.repeats < 1:
        p.error(f"--repeats: expected an integer >= 1, got {a.repeats}")
    return a


def median_ms(fn, repeats):
    """Median wall time of ``repeats`` calls of ``fn`` (after one untimed call), in ms."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def time_steps(x, y, params, workers, batch, repeats):
    """{'whole', 'part', 'in_workers'}: median ms of the three step kinds (module notes)."""
    import numpy as onp
    from scratchadv import train
    from scratchadv.model import predict
    shared = {"transform": None, "loss_fn": None, "predict_fn": predict, "x": x, "y": y}
    idx = onp.arange(batch)
    part = idx[:-(-batch // workers)]          # the largest of the workers' parts
    key = (0, 0, 0)
    out = {"whole": median_ms(lambda: train._part_step(shared, params, idx, key, 0), repeats),
           "part": median_ms(lambda: train._part_step(shared, params, part, key, 0), repeats)}
    with train._step_pool(workers, params, x, y, batch, None, None, predict) as pool:
        out["in_workers"] = median_ms(lambda: train._step_in_parts(pool, params, idx, key, 0), repeats)
    return out


def time_epochs(x, y, params, workers, batch):
    """{'one_process', 'workers'}: seconds of one epoch of ``fit``."""
    from scratchadv.train import fit
    out = {}
    for name, w in (("one_process", 1), ("workers", workers)):
        t = time.perf_counter()
        fit(params, x, y, epochs=1, batch_size=batch, seed=0, verbose=False, workers=w)
        out[name] = time.perf_counter() - t
    return out


def format_report(r):
    s = r["steps_ms"]
    lines = [f"one training step, batch {r['batch']}, {r['workers']} workers (medians of {r['repeats']}):",
             f"  whole batch in one process   {s['whole']:7.2f} ms",
             f"  one part ({r['part_images']} images)         {s['part']:7.2f} ms",
             f"  in {r['workers']} worker processes       {s['in_workers']:7.2f} ms"
             f"  ({s['whole'] / s['in_workers']:.2f}x the whole step; the part alone allows at most "
             f"{s['whole'] / s['part']:.2f}x)"]
    if "epoch_s" in r:
        e = r["epoch_s"]
        lines += [f"one epoch ({r['steps']} steps): one process {e['one_process']:.2f} s, "
                  f"{r['workers']} workers {e['workers']:.2f} s (of which steps x in-workers step: "
                  f"{r['steps'] * s['in_workers'] / 1e3:.2f} s, steps x part: {r['steps'] * s['part'] / 1e3:.2f} s)"]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    from scratchadv.data import load_mnist
    from scratchadv.fileio import atomic_write_json, check_writable
    from scratchadv.model import init_params
    if args.json:
        check_writable(args.json, "--json")
    x, y, _, _ = load_mnist(args.data)
    params = init_params(0)
    r = {"workers": args.workers, "batch": args.batch, "repeats": args.repeats,
         "part_images": -(-args.batch // args.workers), "steps": -(-len(x) // args.batch),
         "steps_ms": time_steps(x, y, params, args.workers, args.batch, args.repeats)}
    if not args.no_epoch:
        r["epoch_s"] = time_epochs(x, y, params, args.workers, args.batch)
    print(format_report(r))
    if args.json:
        atomic_write_json(args.json, r)
    return r


if __name__ == "__main__":
    main()
