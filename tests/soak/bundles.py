"""The soak's policy bundles: a small MLP (the demo's kind) and, on its manifest, a constant and a flipping policy.

All three share one manifest's features and normalisation, so any of them is a valid hot swap for the others.
"""

import json
import shutil
from pathlib import Path

import torch
from torch import nn

from intraday.bundle import MANIFEST_FILE, PolicyBundle, export_bundle, write_bundle
from intraday.config import load_settings
from intraday.data import synth_market
from intraday.env import build_envs

POSITIONS = "0, 0.5"  # long-only: the paper venue is spot (a short is a sell beyond the holdings, rejected)
EPISODE = 1_000_000  # bars per "episode": the runner's force-flat never comes within a soak


class Constant(nn.Module):
    "Always the same action: a target weight held for hours."

    def __init__(self, action: int):
        super().__init__()
        self.action = action

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0],), self.action, dtype=torch.int64)


class Flip(nn.Module):
    "Action 1 on even steps, 0 on odd ones: a new target weight every bar (the step is read off the time left)."

    def __init__(self, episode_len: int):
        super().__init__()
        self.episode_len = float(episode_len)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = torch.round((1.0 - x[:, -1].to(torch.float64)) * self.episode_len).to(torch.int64)
        return 1 - torch.remainder(steps, 2)


def mlp_bundle(out: Path, seed: int = 0) -> Path:
    "A random-weight PPO MLP on a fitted pipeline (the demo's kind of bundle, without minutes of training)."
    from stable_baselines3 import PPO

    torch.set_num_threads(1)
    bars = synth_market(days=12, seed=seed + 101)
    env = {"positions": POSITIONS, "episode_len": 400, "account": "spot"}
    s = load_settings(environ={}, env=env, train={"seed": seed})
    splits = build_envs(s, bars)
    model = PPO("MlpPolicy", splits.make_vec_env("train", 2, seed=seed), n_steps=64, batch_size=64, seed=seed,
                device="cpu", policy_kwargs={"net_arch": [32, 32]})  # fmt: skip
    model.learn(128)  # one short update: a policy whose choice moves with the features
    live_env = splits.env.model_copy(update={"episode_len": EPISODE, "force_flat": False})  # no force-flat in a soak
    path = export_bundle(model, splits.pipeline, splits.fill_model, live_env, out, overwrite=True)
    PolicyBundle.load(path)  # signed by the workbench key, which the runner trusts
    return path


def scripted_bundle(base: Path, module: nn.Module, out: Path, algorithm: str) -> Path:
    "A bundle with `module` as its policy and `base`'s manifest (features, stats, action map, env)."
    if out.exists():
        shutil.rmtree(out)
    scripted = torch.jit.script(module)
    m = json.loads((base / MANIFEST_FILE).read_text()) | {
        "algorithm": algorithm,
        "hyperparameters": {},
        "metrics": None,
    }
    pipeline = PolicyBundle.load(base).pipeline()

    def reference(obs):  # the module's own choices are the probes' record
        with torch.inference_mode():
            return scripted(torch.from_numpy(obs)).numpy()

    write_bundle(scripted, m, pipeline, out, reference, reference_name=algorithm)  # probes recorded, signed
    PolicyBundle.load(out, pipeline)  # a valid bundle, and a valid swap for the base
    return out


def make_bundles(root: Path, seed: int = 0) -> dict[str, Path]:
    "The three bundles of a soak: {'mlp', 'hold' (always long 0.5), 'flip' (0.5 / 0 every other bar)}."
    mlp = mlp_bundle(root / "mlp", seed)
    return {
        "mlp": mlp,
        "hold": scripted_bundle(mlp, Constant(1), root / "hold", "constant-0.5"),
        "flip": scripted_bundle(mlp, Flip(EPISODE), root / "flip", "flip-every-bar"),
    }
