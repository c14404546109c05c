"""The learning bar: does the default training find the planted alpha, and only where there is one?

Run: .venv/bin/python tests/bench/bench_learning.py [--timesteps N]
1. Synthetic market with the default planted alpha: train with the default settings and budget, then compare the
   policy's out-of-sample (test split) net Sharpe with the oracle that trades the planted signal's sign under the
   same costs (goal: >= 50 % of the oracle's).
2. The same pipeline on alpha = 0 data: the out-of-sample net return must not be significantly above zero
   (t-statistic of the mean per-bar log return < 2).
Prints both figures and the wall-clock time of each training."""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from intraday.config import load_settings
from intraday.data import planted_signal, synth_market
from intraday.train import Trainer, evaluate, model_policy, signal_policy


def run(alpha: float, days: int, timesteps: int | None, seed: int):
    overrides = {"train": {"total_timesteps": timesteps}} if timesteps else {}
    settings = load_settings(data={"alpha": alpha}, **overrides)
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
    return settings, seconds, policy, oracle, tstat


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--timesteps", type=int, help="override [train] total_timesteps")
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    settings, secs, pol, ora, _ = run(load_settings().data.alpha, args.days, args.timesteps, args.seed)
    t = settings.train
    print(
        f"planted alpha {settings.data.alpha}, {args.days} days, {t.algo} {t.total_timesteps:,} steps in {secs:.0f} s"
    )
    ratio = pol["sharpe"] / ora["sharpe"] if ora["sharpe"] > 0 else float("nan")
    print(f"  test net Sharpe: policy {pol['sharpe']:.2f} ({pol['trades']} trades), "
          f"oracle {ora['sharpe']:.2f} ({ora['trades']} trades)")  # fmt: skip
    print(f"  policy / oracle = {ratio:.2f}   (goal >= 0.50)")
    _, secs0, pol0, _, tstat = run(0.0, args.days, args.timesteps, args.seed)
    print(f"alpha 0 (martingale), same pipeline, trained in {secs0:.0f} s")
    print(f"  test net log return {pol0['total_log_return']:+.4f}, Sharpe {pol0['sharpe']:.2f}, "
          f"t-stat of mean per-bar return {tstat:+.2f}   (goal: not significantly > 0, t < 2)")  # fmt: skip


if __name__ == "__main__":
    main()
