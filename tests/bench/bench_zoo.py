"""The learning table over the zoo: oracle, RL (PPO) and the supervised baseline out of sample, with placebos.

Run: .venv/bin/python tests/bench/bench_zoo.py [--days 180] [--seed 1] [--seeds 5] [--markets trend,flow]
     [--timesteps N] [--learners rl,linear,mlp] [--restarts K] [--jobs 2]
For each zoo market (intraday.markets.MARKETS) at its default alpha and at alpha = 0 (its placebo), on the test
split (the last 20 % after the embargo) under the default settings and costs:
- the oracle (the planted signal's sign): net Sharpe, t-statistic of its mean per-bar log return, trades;
- PPO at the [train] defaults (budget: [train] total_timesteps unless --timesteps), its best validation model:
  net Sharpe, ratio to the oracle, t, trades, seconds of training, and its last update's explained variance;
  with --restarts K, the [train] restarts rule: K training seeds (intraday.train.restart_seeds), the one whose best
  checkpoint validates best is scored (intraday.train.choose_restart), every seed's validation and test recorded;
- the supervised baseline (intraday.supervised.select_supervised: horizon and entry threshold chosen on the
  validation split), linear and MLP: the same columns.
Market i, repeat k uses seed + i + 1000 k for its draw and its training (alpha and placebo alike): the placebos
are independent draws, and each cell is --seeds draws of market and training. Cells run in --jobs processes, one
torch thread each. At the end, per market and learner: the median, worst and spread (max - min) of the ratio to
the oracle over the seeds, and the goals: median >= 0.5 and worst >= 0.25 on every market, no placebo seed with
t >= 2. One seed per cell is an anecdote."""

import argparse
import csv
import json
import math
import os
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch

from intraday.config import load_settings
from intraday.env import build_envs
from intraday.markets import MARKETS, make_market, targets_policy
from intraday.supervised import SupervisedConfig, score_policy, select_supervised


def ratio(x: float, oracle: float) -> float:
    "A learner's Sharpe as a fraction of the oracle's (NaN when the oracle has no edge to share)."
    return x / oracle if oracle > 0 else math.nan


def ppo_row(settings, bars, timesteps: int | None = None, seed: int | None = None) -> dict:
    "Train PPO at the settings (optionally another budget / seed), score its best model on the test split."
    from intraday.train import Trainer, model_policy

    t = settings.train.model_copy(update={k: v for k, v in (("total_timesteps", timesteps), ("seed", seed)) if v})
    s = settings.model_copy(update={"train": t})
    run = Path(tempfile.mkdtemp()) / "run"
    t0 = time.perf_counter()
    trainer = Trainer(s, bars, run)
    trainer.fit()
    seconds = time.perf_counter() - t0
    out = score_policy(model_policy(trainer.best_model()), trainer.splits, "test")
    rows = list(csv.DictReader(open(run / "logs" / "progress.csv")))
    last = [r for r in rows if r.get("train/explained_variance")]
    diag = {k: float(last[-1][f"train/{k}"]) for k in ("explained_variance", "entropy_loss")} if last else {}
    vals = [float(r["val/sharpe"]) for r in rows if r.get("val/sharpe")]
    return {**out, "seconds": seconds, **diag, "val_history": vals, "val_best": trainer.state.best,
            "steps": trainer.state.steps}  # fmt: skip


def restarts_row(settings, bars, timesteps: int | None, seed: int, k: int) -> dict:
    "[train] restarts = k, one seed after another: each seed's row, and the scored one is the best on validation."
    from intraday.train import restart_seeds

    members = [{"train_seed": s, **ppo_row(settings, bars, timesteps, s)} for s in restart_seeds(seed, k)]
    return choose_members(members)


def choose_members(members: list[dict]) -> dict:
    "The chosen restart's row, with every restart's seed, validation, test Sharpe and t under 'restarts'."
    from intraday.train import choose_restart

    i = choose_restart([m["val_best"] for m in members])
    keys = ("train_seed", "val_best", "sharpe", "t", "trades", "seconds")
    return {**members[i], "seconds": sum(m["seconds"] for m in members),
            "restarts": [{k: m[k] for k in keys} for m in members]}  # fmt: skip


def zoo_row(name: str, alpha: float, days: float, seed: int, learners=("rl", "linear", "mlp"),
            timesteps: int | None = None, restarts: int = 1) -> dict:  # fmt: skip
    "Oracle and each learner on one zoo market (alpha 0 = its placebo), scored on the test split."
    torch.set_num_threads(1)
    settings = load_settings()
    bars = make_market(name, days=days, seed=seed, alpha=alpha)
    splits = build_envs(settings, bars)
    x = MARKETS[name].targets(bars).to_numpy()[bars.index.get_indexer(splits.bars["test"].index)]
    oracle = score_policy(targets_policy(splits.env.positions, x), splits)
    row = {"market": name, "alpha": alpha, "seed": seed, "oracle": oracle}
    for learner in learners:
        t0 = time.perf_counter()
        if learner == "rl":
            row["rl"] = (
                restarts_row(settings, bars, timesteps, seed, restarts)
                if restarts > 1
                else ppo_row(settings, bars, timesteps, seed)
            )
        else:
            fit = select_supervised(splits, SupervisedConfig(model=learner, seed=seed))
            row[learner] = {**fit.score("test"), "seconds": time.perf_counter() - t0, "k": fit.config.horizon}
    return row


def _cell(r: dict, oracle: float, placebo: bool) -> str:
    "One learner's columns: Sharpe, ratio to the oracle (t for a placebo), trades, seconds."
    mid = f"t {r['t']:5.2f}" if placebo else f"{ratio(r['sharpe'], oracle):7.2f}"
    return f"{r['sharpe']:7.1f} {mid} {r['trades']:5d} {r['seconds']:4.0f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=float, default=180)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=5, help="draws of market and training per cell")
    ap.add_argument("--markets", default=",".join(MARKETS))
    ap.add_argument("--learners", default="rl,linear,mlp")
    ap.add_argument("--timesteps", type=int, default=None, help="PPO budget (default: [train] total_timesteps)")
    ap.add_argument("--restarts", type=int, default=1, help="PPO training seeds per cell, the best on validation kept")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument(
        "--store",
        type=Path,
        help="JSON lines of finished cells: appended as each one ends, and the "
        "cells already there (same days, budget, learners) are not run again (a long table in parts)",
    )
    args = ap.parse_args()
    names, learners = args.markets.split(","), args.learners.split(",")
    t = load_settings().train
    budget = args.timesteps or t.total_timesteps
    print(f"zoo on {platform.node()} ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{args.jobs} jobs, torch threads 1): {args.days:g} days per market, {args.seeds} seeds per cell "
          f"({args.seed} + i + 1000 k), test split, "
          f"default costs; PPO {budget:,} steps, best of {args.restarts} seed(s) on validation, gamma {t.gamma}, "
          f"n_steps {t.n_steps}, {t.n_envs} envs")  # fmt: skip
    head = f"{'market':9} {'alpha':>5} | {'oracle':>7} {'t':>5} {'trd':>5} |" + "".join(
        f" {lr:>7} {'/orc|t':>7} {'trd':>5} {'s':>4} |" for lr in learners
    )
    print(head + "\n" + "-" * len(head), flush=True)
    tasks = [(n, a, args.seed + i + 1000 * k) for k in range(args.seeds) for i, n in enumerate(names)
             for a in (MARKETS[n].alpha, 0.0)]  # fmt: skip
    config = {"days": args.days, "timesteps": budget, "learners": learners}
    if args.restarts > 1:
        config["restarts"] = args.restarts
    t0 = time.perf_counter()
    kw = {"days": args.days, "learners": learners, "timesteps": args.timesteps, "restarts": args.restarts}
    rows = run_cells(zoo_row, tasks, kw, config, args.store, args.jobs, lambda r: _line(r, learners))
    print(f"all rows in {time.perf_counter() - t0:.0f} s")
    for lr in learners:
        print(summary(rows, lr))


def stored(path: Path | None, config: dict, tasks: list[tuple], name: str = "market") -> dict:
    "The rows of `path` run with `config` whose (row[name], alpha, seed) is one of `tasks`."
    out = {}
    if path is None or not path.is_file():
        return out
    for line in path.read_text().splitlines():
        d = json.loads(line)
        r = d.pop("row")
        key = (r[name], r["alpha"], r["seed"])
        if d == config and key in tasks:
            out[key] = r
    return out


def run_cells(cell, tasks: list[tuple], kw: dict, config: dict, path: Path | None, jobs: int, line,
              name: str = "market") -> list[dict]:  # fmt: skip
    "Every task's row: the stored ones read back, the others run in `jobs` processes, printed and stored as they end."
    done = stored(path, config, tasks, name)
    rows = list(done.values())
    for r in rows:
        print(line(r) + " (stored)", flush=True)
    with ProcessPoolExecutor(jobs) as pool:
        futs = [pool.submit(cell, n, a, seed=s, **kw) for n, a, s in tasks if (n, a, s) not in done]
        for fut in as_completed(futs):
            rows.append(fut.result())
            store(path, config, rows[-1])
            print(line(rows[-1]), flush=True)
    return rows


def store(path: Path | None, config: dict, row: dict) -> None:
    "Append a finished cell to `path` (JSON lines), if there is one."
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({**config, "row": row}, default=float) + "\n")


def _line(r: dict, learners: list[str]) -> str:
    "One printed row: market, alpha, the oracle, then each learner."
    o = r["oracle"]
    line = f"{r['market']:9} {r['alpha']:5.2f} | {o['sharpe']:7.1f} {o['t']:5.2f} {o['trades']:5d} |"
    return line + "".join(f" {_cell(r[lr], o['sharpe'], r['alpha'] == 0)} |" for lr in learners)


def seed_stats(ratios: list[float]) -> dict:
    "Median, worst and spread (max - min) of one cell's ratios to the oracle over its seeds (NaN ones dropped)."
    r = [x for x in ratios if not math.isnan(x)]
    if not r:
        return {"n": 0, "median": math.nan, "worst": math.nan, "spread": math.nan}
    return {"n": len(r), "median": float(np.median(r)), "worst": min(r), "spread": max(r) - min(r)}


def summary(rows: list[dict], lr: str) -> str:
    "Per market: median / worst / spread of `lr`'s ratio to the oracle over the seeds, placebo max t; the goals."
    lines, ok_med, ok_worst, placebo_hits = [], True, True, []
    for m in dict.fromkeys(r["market"] for r in rows):
        real = [r for r in rows if r["market"] == m and r["alpha"] > 0]
        st = seed_stats([ratio(r[lr]["sharpe"], r["oracle"]["sharpe"]) for r in real])
        ts = [r[lr]["t"] for r in rows if r["market"] == m and r["alpha"] == 0]
        placebo_hits += [m for t in ts if t >= 2]
        ok_med &= st["median"] >= 0.5
        ok_worst &= st["worst"] >= 0.25
        lines.append(f"  {lr:6} {m:9} seeds {st['n']}: median {st['median']:5.2f}, worst {st['worst']:5.2f}, "
                     f"spread {st['spread']:5.2f}; placebo max t {max(ts, default=math.nan):5.2f}")  # fmt: skip
    goals = (f"goal {lr}: median >= 0.5 on every market {'MET' if ok_med else 'MISSED'}; worst seed >= 0.25 "
             f"{'MET' if ok_worst else 'MISSED'}; placebo seeds with t >= 2: {len(placebo_hits)}")  # fmt: skip
    return "\n".join([*lines, goals])


if __name__ == "__main__":
    main()
