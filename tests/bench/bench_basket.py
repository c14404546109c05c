"""The learning table of the multi-asset zoo: the basket policy (PPO) and the supervised ranker against the oracle,
equal weight and cross-sectional momentum, out of sample, with placebos.

Run: .venv/bin/python tests/bench/bench_basket.py [--days 60] [--seeds 5] [--kinds rotation,lead_lag,reversal]
     [--timesteps N] [--learners rl,ranker] [--jobs 2] [--store FILE]
For each basket kind (intraday.panel.Basket, 3 symbols) at its alpha (--alpha, default the Basket's) and at alpha 0
(its placebo), on the test split of the basket environment (intraday.basket, default [env] and costs), every
strategy through the same env and `train.evaluate` (episodes tiling the split):
- oracle: each symbol at the level of its planted target's sign (the env's gross cap sizes them);
- equal weight: every symbol long; momentum: long the symbol with the largest return over the last hour;
- rl: PPO at the [train] defaults (budget --timesteps), its best validation model;
- ranker: `basket.select_ranker` (horizon and entry threshold chosen on validation).
Basket i, repeat k uses seed + i + 1000 k for its draw and its training. Printed per cell: net Sharpe, ratio to
the oracle (t for a placebo), trades, seconds; then per kind and learner the median, worst and spread of the
ratio over the seeds, and the goals (median >= 0.5 of the oracle and above equal weight on every planted basket,
no placebo seed with t >= 2). --store keeps finished cells (JSON lines) so a long table can be built in parts."""

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from bench_zoo import ratio, run_cells, seed_stats

from intraday.basket import build_basket_envs, rank_policy, select_ranker
from intraday.config import load_settings
from intraday.markets import targets_policy
from intraday.panel import KINDS, Basket
from intraday.supervised import score_policy


def basket_row(kind: str, alpha: float, days: float, seed: int, learners, timesteps: int | None) -> dict:
    "The oracle, the baselines and each learner on one basket (alpha 0 = its placebo), scored on the test split."
    from intraday.train import Trainer, model_policy

    torch.set_num_threads(1)
    settings = load_settings()
    basket = Basket(kind, alpha=alpha)
    panel = basket.generate(days=days, seed=seed)
    splits = build_basket_envs(settings, panel)
    test = splits.bars["test"]
    pos = settings.env.positions
    target = np.sign(basket.oracle(panel).reindex(test.index).to_numpy())
    ret = np.log(panel.field("close")).diff(60).reindex(test.index).to_numpy()
    best = (ret == np.nanmax(ret, axis=1, keepdims=True)).astype(float)  # long the last hour's strongest
    row = {"kind": kind, "alpha": alpha, "seed": seed,
           "oracle": score_policy(targets_policy(pos, target), splits),
           "equal": score_policy(targets_policy(pos, np.ones_like(target)), splits),
           "momentum": score_policy(targets_policy(pos, best), splits)}  # fmt: skip
    for learner in learners:
        t0 = time.perf_counter()
        if learner == "rl":
            budget = {"total_timesteps": timesteps} if timesteps else {}
            t = settings.train.model_copy(update={"seed": seed, **budget})
            s = settings.model_copy(update={"train": t})
            trainer = Trainer(s, pd.concat(panel.bars.values()), Path(tempfile.mkdtemp()) / "run", splits=splits)
            trainer.fit()
            row["rl"] = score_policy(model_policy(trainer.best_model()), splits)
        else:
            row["ranker"] = score_policy(rank_policy(select_ranker(splits), splits), splits)
        row[learner]["seconds"] = time.perf_counter() - t0
    return row


def _cell(r: dict, oracle: float, placebo: bool) -> str:
    mid = f"t {r['t']:5.2f}" if placebo else f"{ratio(r['sharpe'], oracle):7.2f}"
    return f"{r['sharpe']:7.1f} {mid} {r['trades']:5.0f} {r.get('seconds', 0):4.0f}"


def _line(r: dict, learners) -> str:
    o, placebo = r["oracle"], r["alpha"] == 0
    head = f"{r['kind']:9} {r['alpha']:5.2f} | {o['sharpe']:7.1f} {o['t']:5.2f} {o['trades']:5.0f} |"
    return head + "".join(f" {_cell(r[k], o['sharpe'], placebo)} |" for k in ("equal", "momentum", *learners))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=float, default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--alpha", type=float, help="planted alpha of every basket (default: the Basket's)")
    ap.add_argument("--learners", default="rl,ranker")
    ap.add_argument("--timesteps", type=int)
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--store", type=Path, help="JSON lines of finished cells (appended; stored cells are not rerun)")
    args = ap.parse_args()
    kinds, learners = args.kinds.split(","), args.learners.split(",")
    budget = args.timesteps or load_settings().train.total_timesteps
    alpha = Basket(kinds[0]).alpha if args.alpha is None else args.alpha
    print(
        f"baskets on {platform.node()} ({os.cpu_count()} cores, {args.jobs} jobs): {args.days:g} days, 3 "
        f"symbols, alpha {alpha}, {args.seeds} seeds per cell; PPO {budget:,} steps; net Sharpe, test split"
    )
    head = f"{'basket':9} {'alpha':>5} | {'oracle':>7} {'t':>5} {'trd':>5} |" + "".join(
        f" {k:>7} {'/orc|t':>7} {'trd':>5} {'s':>4} |" for k in ("equal", "momentum", *learners)
    )
    print(head + "\n" + "-" * len(head), flush=True)
    tasks = [(k, a, args.seed + i + 1000 * j) for j in range(args.seeds) for i, k in enumerate(kinds)
             for a in (alpha, 0.0)]  # fmt: skip
    config = {"days": args.days, "timesteps": budget, "learners": learners}
    kw = {"days": args.days, "learners": learners, "timesteps": args.timesteps}
    rows = run_cells(basket_row, tasks, kw, config, args.store, args.jobs, lambda r: _line(r, learners), "kind")
    for lr in learners:
        ok_med = ok_eq = True
        hits = []
        for k in kinds:
            real = [r for r in rows if r["kind"] == k and r["alpha"] > 0]
            st = seed_stats([ratio(r[lr]["sharpe"], r["oracle"]["sharpe"]) for r in real])
            above = sum(r[lr]["sharpe"] > r["equal"]["sharpe"] for r in real)
            hits += [k for r in rows if r["kind"] == k and r["alpha"] == 0 and r[lr]["t"] >= 2]
            ok_med &= st["median"] >= 0.5
            ok_eq &= above * 2 > len(real)
            print(
                f"  {lr:6} {k:9} seeds {st['n']}: median {st['median']:5.2f}, worst {st['worst']:5.2f}, "
                f"spread {st['spread']:5.2f} (NaN: the oracle lost); above equal weight {above} of {len(real)}"
            )
        print(f"goal {lr}: median >= 0.5 of the oracle on every basket {'MET' if ok_med else 'MISSED'}; above equal "
              f"weight {'MET' if ok_eq else 'MISSED'}; placebo seeds with t >= 2: {len(hits)}")  # fmt: skip


if __name__ == "__main__":
    main()
