"""The soak for a basket (issue 23): the real `intraday live run` on a basket bundle against the real paper venue
serving a basket file, both as subprocesses, on the stepped clock, with the single soak's faults, kill -9s, full
disk, corrupted journal (the first symbol's), venue restart and /kill under hanging cancels; audited per symbol
from the venue's ledger against that symbol's journal. There is no hot swap: the basket runner does not watch its
bundle folder.

Run (from the repository root, PYTHONPATH on it):

    python -m tests.soak --basket            # 3 simulated days of 3 symbols, 12 kill -9s
    python -m tests.soak --basket --short    # 1 day, 3 kill -9s

Same line, summary.json and exit code as the single soak (tests/soak/soak.py).
"""

import dataclasses
import shutil
import time
from pathlib import Path

import torch
from bundles import EPISODE, POSITIONS

from intraday.basket import build_basket_envs
from intraday.basket_bundle import export_basket_bundle
from intraday.bundle import MANIFEST_FILE, PolicyBundle
from intraday.config import load_settings
from intraday.panel import Basket, write_panel
from soak import WARM, Segment, Soak

KIND = "rotation"  # a planted rotation: the random policy's weights move with the cross features


def basket_bundle(out: Path, seed: int = 0) -> Path:
    "A random-weight PPO basket bundle (long-only levels, no forced flat): positions held for hours, then moved."
    from stable_baselines3 import PPO

    torch.set_num_threads(1)
    panel = Basket(KIND).generate(days=12, seed=seed + 101)
    s = load_settings(environ={}, env={"positions": POSITIONS, "episode_len": 400, "account": "spot"},
                      train={"seed": seed})  # fmt: skip
    splits = build_basket_envs(s, panel)
    model = PPO("MlpPolicy", splits.make_vec_env("train", 2, seed=seed), n_steps=64, batch_size=64, seed=seed,
                device="cpu", policy_kwargs={"net_arch": [32, 32]})  # fmt: skip
    model.learn(128)
    live_env = splits.env.model_copy(update={"episode_len": EPISODE, "force_flat": False})  # no force-flat in a soak
    path = export_basket_bundle(model, dataclasses.replace(splits, env=live_env), out, overwrite=True)
    PolicyBundle.load(path)  # signed by the workbench key, which the runner trusts
    return path


class BasketSoak(Soak):
    "The single soak's schedule and audit on a basket: a journal folder per symbol, one kill file, one account."

    def prepare(self) -> None:
        c = self.cfg
        n_days = (WARM + c.bars + 4 * c.rebase_bars + 600) / 1440 + 1
        self.panel = Basket(KIND).generate(days=n_days, seed=c.seed)
        self.data = write_panel(self.panel, self.out / "basket.parquet")
        bundles = Path(c.bundles) if c.bundles else None
        t = time.time()
        if bundles and (bundles / "basket" / MANIFEST_FILE).is_file():
            self.bundles = {"basket": bundles / "basket"}
        else:
            self.bundles = {"basket": basket_bundle(self.out / "bundles" / "basket", c.seed)}
        self.prepare_common()
        shutil.copytree(self.bundles["basket"], self.live_bundle)
        self.note("bundles", seconds=round(time.time() - t, 1), basket=str(self.bundles["basket"]))

    def schedule(self) -> list[tuple[int, str, str | None]]:
        "The single soak's events without its hot swaps."
        return [e for e in super().schedule() if e[1] != "swap"]

    def market_args(self) -> list[str]:
        return []

    def journal_dirs(self, seg: Segment) -> list[Path]:
        return [seg.state / s.replace("/", "-") for s in self.panel.symbols]

    def audits(self, seg: Segment) -> list[dict]:
        "Each symbol's journal against the venue's orders and trades of that symbol (one account's balances)."
        out = []
        for sym, d in zip(self.panel.symbols, self.journal_dirs(seg)):
            wire = sym.replace("/", "")
            ledgers = [led | {"orders": [o for o in led["orders"] if o["symbol"] == wire],
                              "trades": [t for t in led["trades"] if t["symbol"] == wire]}
                       for led in seg.ledgers]  # fmt: skip
            sub = Segment(f"{seg.name}-{d.name}", d, ledgers, seg.cut_seqs.get(d.name))
            out.append(self.audit(sub, sym.split("/")[0]) | {"symbol": sym})
        return out
