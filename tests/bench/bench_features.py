"""Benchmark: FeaturePipeline against the same features in plain pandas, and streaming cost per bar.

Run: .venv/bin/python tests/bench/bench_features.py [--bars 1000000]
Prints the batch speed ratio (goal >= 10x; both sides timed in alternating rounds, best and median)
and microseconds per streamed bar (goal <= 20 us)."""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from feature_reference import reference_features  # noqa: E402

from intraday.config import load_settings  # noqa: E402
from intraday.data import synth_market  # noqa: E402
from intraday.features import FeaturePipeline  # noqa: E402


def interleaved(fns, repeat: int) -> list[list[float]]:
    "Wall-clock seconds of each fn over `repeat` rounds, one run of each per round, so both see the same noise."
    times = [[] for _ in fns]
    for _ in range(repeat):
        for fn, ts in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bars", type=int, default=1_000_000)
    ap.add_argument("--stream-bars", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    fs = load_settings(environ={}).features
    pipe = FeaturePipeline.from_settings(fs)
    bars = synth_market(days=args.bars / 1440, seed=1)
    pipe.transform(bars.iloc[:5000])  # compile (or load the numba cache) outside the timing
    t_ours, t_ref = interleaved([lambda: pipe.transform(bars), lambda: reference_features(bars, fs)], args.repeat)
    ours, ref = min(t_ours), min(t_ref)
    print(f"batch, {len(bars):,} bars x {len(pipe.names)} features ({args.repeat} interleaved rounds)")
    print(f"  FeaturePipeline.transform  best {ours:6.3f} s   median {np.median(t_ours):6.3f} s")
    print(f"  pandas rolling/ewm         best {ref:6.3f} s   median {np.median(t_ref):6.3f} s")
    ratio = np.median(np.array(t_ref) / np.array(t_ours))
    print(f"  speed ratio, best to best  {ref / ours:6.1f}x   (goal >= 10x)")
    print(f"  speed ratio, median round  {ratio:6.1f}x")

    arr = np.column_stack([bars.index.as_unit("ns").asi8 // 10**9, bars.to_numpy()]).astype(float)[: args.stream_bars]
    stream = pipe.stream()
    stream.update_values(*arr[0])
    t0 = time.perf_counter()
    for row in arr[1:]:
        stream.update_values(*row)
    per_bar = (time.perf_counter() - t0) / (len(arr) - 1) * 1e6
    series = bars.iloc[1:2001]
    stream2 = pipe.stream()
    stream2.update(bars.iloc[0])
    t0 = time.perf_counter()
    for _, row in series.iterrows():
        stream2.update(row)
    per_series = (time.perf_counter() - t0) / len(series) * 1e6
    print(f"streaming, whole default pipeline ({len(pipe.names)} features)")
    print(f"  update_values(ts, o, h, l, c, v)   {per_bar:6.2f} us/bar   (goal <= 20 us)")
    print(f"  update(pandas row)                 {per_series:6.2f} us/bar")


if __name__ == "__main__":
    main()
