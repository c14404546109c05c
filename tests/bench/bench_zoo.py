"""The learning table over the zoo: oracle, supervised linear / MLP (and optionally PPO) out of sample, with placebos.

Run: .venv/bin/python tests/bench/bench_zoo.py [--days 60] [--seed 1] [--markets trend,flow] [--ppo schedule]
     [--timesteps 300000]
For each zoo market (intraday.markets.MARKETS) at its default alpha and at alpha = 0 (its placebo), on the test
split (the last 20 % after the embargo) under the default settings and costs:
- the oracle (the planted signal's sign) net Sharpe, t-statistic of its mean per-bar log return, trades;
- the supervised baseline (intraday.supervised.select_supervised: horizon and entry threshold chosen on the
  validation split), linear and MLP: net Sharpe, ratio to the oracle, t, trades, fit seconds;
- with --ppo, PPO at [train] defaults but --timesteps steps on the named markets, with its training diagnostics
  (explained variance, value loss, entropy of the last update) read from the run's progress.csv.
Market i uses seed + i (alpha and placebo alike), so the five placebos are independent draws."""

import argparse
import csv
import math
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from intraday.config import load_settings
from intraday.env import build_envs
from intraday.markets import MARKETS, make_market, targets_policy
from intraday.supervised import SupervisedConfig, score_policy, select_supervised


def ratio(x: float, oracle: float) -> float:
    return x / oracle if oracle > 0 else math.nan


def ppo_row(settings, bars, timesteps: int) -> dict:
    "Train PPO (default settings, `timesteps` steps), score its best model on the test split, read its diagnostics."
    from intraday.train import Trainer, model_policy

    s = settings.model_copy(update={"train": settings.train.model_copy(update={"total_timesteps": timesteps})})
    run = Path(tempfile.mkdtemp()) / "run"
    t0 = time.perf_counter()
    trainer = Trainer(s, bars, run)
    trainer.fit()
    seconds = time.perf_counter() - t0
    out = score_policy(model_policy(trainer.best_model()), trainer.splits, "test")
    rows = list(csv.DictReader(open(run / "logs" / "progress.csv")))
    last = [r for r in rows if r.get("train/explained_variance")]
    diag = (
        {k: float(last[-1][f"train/{k}"]) for k in ("explained_variance", "value_loss", "entropy_loss")} if last else {}
    )
    vals, steps = [], 0
    for r in rows:  # evaluation rows carry no step count: take the last rollout's
        steps = int(float(r["time/total_timesteps"])) if r.get("time/total_timesteps") else steps
        if r.get("val/sharpe"):
            vals.append((steps, float(r["val/sharpe"]), float(r["val/trades"])))
    return {**out, "seconds": seconds, **diag, "val_history": vals, "gamma": s.train.gamma, "run": str(run)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--markets", default=",".join(MARKETS))
    ap.add_argument("--ppo", default="", help="comma-separated markets to also train PPO on")
    ap.add_argument("--timesteps", type=int, default=300_000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    settings = load_settings()
    names = args.markets.split(",")
    print(f"zoo on {platform.node()} ({platform.processor() or platform.machine()}, torch threads 1): "
          f"{args.days} days per market, seed {args.seed} + i, test split, default costs")  # fmt: skip
    head = (f"{'market':9} {'alpha':>5} {'IC':>6} | {'oracle':>7} {'t':>6} {'trd':>5} | {'linear':>7} {'/orc':>5} "
            f"{'t':>6} {'trd':>5} {'s':>4} | {'mlp':>7} {'/orc':>5} {'t':>6} {'trd':>5} {'s':>4}")  # fmt: skip
    print(head)
    print("-" * len(head))
    for i, name in enumerate(names):
        m = MARKETS[name]
        for alpha in (m.alpha, 0.0):
            bars = make_market(name, days=args.days, seed=args.seed + i, alpha=alpha)
            splits = build_envs(settings, bars)
            test = splits.bars["test"]
            x = m.targets(bars).to_numpy()[bars.index.get_indexer(test.index)]
            ora = score_policy(targets_policy(splits.env.positions, x), splits, "test")
            res = {}
            for model in ("linear", "mlp"):
                t0 = time.perf_counter()
                learner = select_supervised(splits, SupervisedConfig(model=model, seed=args.seed))
                res[model] = {**learner.score("test"), "seconds": time.perf_counter() - t0,
                              "k": learner.config.horizon, "enter": learner.config.enter}  # fmt: skip
            ic = m.ic(alpha, share=float(np.mean(m.signal(bars).to_numpy() ** 2)))
            line = f"{name:9} {alpha:5.2f} {ic:6.3f} | {ora['sharpe']:7.2f} {ora['t']:6.2f} {ora['trades']:5d} |"
            for model in ("linear", "mlp"):
                r = res[model]
                line += (f" {r['sharpe']:7.2f} {ratio(r['sharpe'], ora['sharpe']):5.2f} {r['t']:6.2f} "
                         f"{r['trades']:5d} {r['seconds']:4.0f} |")  # fmt: skip
            lin, mlp = res["linear"], res["mlp"]
            print(line + f" k={lin['k']}/{mlp['k']} enter={lin['enter']}/{mlp['enter']}", flush=True)
            if name in args.ppo.split(","):
                nan = math.nan
                p = ppo_row(settings, bars, args.timesteps)
                print(f"  PPO {args.timesteps:,} steps (gamma {p['gamma']}): test Sharpe {p['sharpe']:.2f} "
                      f"(/oracle {ratio(p['sharpe'], ora['sharpe']):.2f}), t {p['t']:.2f}, {p['trades']} trades, "
                      f"{p['seconds']:.0f} s; last update: explained variance {p.get('explained_variance', nan):.3f}, "
                      f"value loss {p.get('value_loss', nan):.4f}, entropy loss {p.get('entropy_loss', nan):.3f}",
                      flush=True)  # fmt: skip
                hist = ", ".join(f"{s // 1000}k: {v:.1f} ({int(n)} tr)" for s, v, n in p["val_history"])
                print(f"  PPO validation Sharpe by step: {hist}", flush=True)


if __name__ == "__main__":
    main()
