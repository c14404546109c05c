"""The learning bar: does the default training find the planted alpha, and only where there is one?

Run: .venv/bin/python tests/bench/bench_learning.py [--timesteps N] [--seeds 5] [--restarts K]
1. Synthetic market with the default planted alpha: train with the default settings and budget, then compare the
   policy's out-of-sample (test split) net Sharpe with the oracle that trades the planted signal's sign under the
   same costs.
2. The same pipeline on alpha = 0 data: the out-of-sample net return must not be significantly above zero
   (t-statistic of the mean per-bar log return < 2).
Both for --seeds draws of market and training (seed, seed + 1000, ...): prints each, then the ratio's median
(goal >= 0.5), worst seed (goal >= 0.25) and spread, and how many placebo seeds reach t >= 2 (goal: none).
--restarts K trains with [train] restarts = K (K training seeds in parallel processes, the best on validation kept)
and prints every restart's validation score."""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_zoo import seed_stats

from intraday.config import load_settings
from intraday.data import planted_signal, synth_market
from intraday.train import Trainer, evaluate, model_policy, signal_policy


def run(alpha: float, days: int, timesteps: int | None, seed: int, restarts: int = 1):
    train = {"restarts": restarts, **({"total_timesteps": timesteps} if timesteps else {})}
    settings = load_settings(data={"alpha": alpha}, train=train)
    bars = synth_market(days=days, seed=seed, alpha=alpha)
    t0 = time.perf_counter()
    trainer = Trainer(settings, bars, Path(tempfile.mkdtemp()) / "run")
    trainer.fit()
    model = trainer.best_model()
    seconds = time.perf_counter() - t0
    splits = trainer.splits
    policy = evaluate(model_policy(model), splits, "test", curve=True)
    x = planted_signal(bars).to_numpy()[bars.index.get_indexer(splits.bars["test"].index)]
    oracle = evaluate(signal_policy(splits.env.positions, x), splits, "test")
    logret = np.diff(np.log(policy.pop("equity_curve")))
    tstat = logret.mean() / (logret.std(ddof=1) / np.sqrt(len(logret))) if logret.std() > 0 else 0.0
    policy["restarts"] = trainer.state.restarts
    return settings, seconds, policy, oracle, tstat


def _restarts(policy: dict) -> str:
    "The restarts' validation scores, the chosen one starred (empty for one seed)."
    cells = [f"{r['seed']}{'*' if r['chosen'] else ''} " + ("none" if r["score"] is None else f"{r['score']:.2f}")
             for r in policy["restarts"]]  # fmt: skip
    return f"; restarts (validation): {', '.join(cells)}" if cells else ""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--timesteps", type=int, help="override [train] total_timesteps")
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=5, help="draws of market and training (seed, seed + 1000, ...)")
    ap.add_argument("--restarts", type=int, default=1, help="[train] restarts: training seeds, the best on validation")
    args = ap.parse_args()
    alpha, ratios, ts = load_settings().data.alpha, [], []
    for k in range(args.seeds):
        seed = args.seed + 1000 * k
        settings, secs, pol, ora, _ = run(alpha, args.days, args.timesteps, seed, args.restarts)
        t = settings.train
        r = pol["sharpe"] / ora["sharpe"] if ora["sharpe"] > 0 else float("nan")
        ratios.append(r)
        print(f"seed {seed}: alpha {alpha}, {args.days} days, {t.algo} {t.total_timesteps:,} steps in {secs:.0f} s: "
              f"test net Sharpe policy {pol['sharpe']:.2f} ({pol['trades']} trades), oracle {ora['sharpe']:.2f} "
              f"({ora['trades']} trades), ratio {r:.2f}{_restarts(pol)}", flush=True)  # fmt: skip
        _, secs0, pol0, _, tstat = run(0.0, args.days, args.timesteps, seed, args.restarts)
        ts.append(tstat)
        print(f"seed {seed}: alpha 0 (martingale) in {secs0:.0f} s: net log return {pol0['total_log_return']:+.4f}, "
              f"Sharpe {pol0['sharpe']:.2f}, t {tstat:+.2f}{_restarts(pol0)}", flush=True)  # fmt: skip
    st = seed_stats(ratios)
    print(f"policy / oracle over {st['n']} seeds: median {st['median']:.2f} (goal >= 0.50), worst {st['worst']:.2f} "
          f"(goal >= 0.25), spread {st['spread']:.2f}; placebo seeds with t >= 2: {sum(t >= 2 for t in ts)} "
          f"(max t {max(ts):+.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
