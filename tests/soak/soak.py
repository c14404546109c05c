"""Soak harness (issue 20): the real `intraday live` runner against the real paper venue, both as subprocesses, on a
stepped clock for simulated days, with faults, hot swaps, kill -9s, a venue restart, a full disk, a corrupted journal
page and /kill under hanging cancels; audited at the end from the venue's ledger against the runner's journals.

Run (from the repository root, PYTHONPATH on it; root for the tmpfs mount of the state directory):

    python -m tests.soak                 # 3 simulated days (4,320 bars at 0.17 s), 12 kill -9s: about 15 minutes
    python tests/soak/soak.py --short    # 1 day (1,440 bars at 0.15 s), 3 kill -9s: about 5 minutes

Prints one line (simulated hours, decisions, orders, faults, kills, crashes, duplicates, lost, mismatches, halts by
cause) and writes summary.json beside the logs (--out, default reports/soak/<time>). Exit code 1 when crashes,
duplicates, lost orders or mismatches are not all 0.

What a crash is: a runner process that exited non-zero, or printed a Python traceback on stderr, without an explicit
stop from the harness. The one exit that is expected is the runner refusing a corrupted journal: non-zero, no
traceback, a message naming the journal file ("refusal"). Every runner and venue process keeps its stdout/stderr and
JSON log under <out>/logs; each crash records its last traceback lines.

The honest continuation after the venue restart: the rebased venue has a fresh ledger, so the runner's journal no
longer describes the account. The runner must halt naming both numbers; the harness records the halt, stops that
runner and goes on with a fresh state directory (and a new runner name, so client ids never collide) on the new
venue. The first segment is audited against the first venue's ledger as it was when the venue was lost, and the
journal as it was at that instant (events after it are counted separately, as orders sent to the lost venue).
"""

import argparse
import errno
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))

from bundles import make_bundles  # noqa: E402  (run as a script or as tests.soak: the folder is on the path)

from intraday.bundle import MANIFEST_FILE, SIGNED_FILES  # noqa: E402
from intraday.config import LiveSettings  # noqa: E402
from intraday.data import synth_market, write_bars  # noqa: E402
from intraday.journal import JOURNAL_FILE, Journal  # noqa: E402
from intraday.router import ledger_audit  # noqa: E402
from intraday.signing import SIGNATURE_FILE  # noqa: E402

KEY, SECRET, TOKEN = "soak-key-0001", "soak-secret-0001", "soak-token-0001"
SYMBOL, BASE = "SYN/USDT", "SYN"
WARM = 1500  # the venue's first current bar: past the default pipeline's warm-up (1,439 bars)
STEP_MS = 60_000


@dataclass
class Config:
    bars: int = 4320  # bars stepped (4,320 one-minute bars = 3 simulated days)
    step_s: float = 0.17  # wall seconds per bar
    kills: int = 12  # kill -9 of the runner at random instants
    seed: int = 20  # seed of the schedule, the faults and the bundles
    faults: bool = True  # the soak's fault profile on the venue
    out: Path = Path("reports/soak")  # work folder: logs, bundles, data, summary.json
    tmpfs_mb: int = 64  # size of the tmpfs holding the state directories
    full_bars: int = 0  # bars the state directory stays full (0: bars / 25)
    resume_after: int = 10  # bars a halt lasts before the harness resumes the runner (POST /resume)
    reconcile_s: float = 5.0  # the runner's [live] reconcile_every_s (the venue restart is found at a reconciliation)
    rebase_bars: int = 30  # the restarted venue's clock starts this many bars after the old one's
    bundles: Path | None = None  # reuse the bundles of an earlier run (folder with mlp/, hold/, flip/; basket/)
    basket: bool = False  # a basket bundle on a basket file (tests/soak/basket.py)


def fault_profile(seed: int) -> dict:
    "The soak's faults: lost acks and requests, 5xx, 429, invisible orders, duplicate trades, late fills, hung cancels."
    reads = {"5xx": 0.02, "429": 0.004, "drop_request": 0.015, "drop_response": 0.015, "malformed": 0.01,
             "latency": {"exponential": 1.0}}  # fmt: skip
    create = {"5xx": 0.03, "429": 0.01, "drop_request": 0.03, "drop_response": 0.05, "malformed": 0.02,
              "invisible": 0.04, "latency": {"exponential": 2.0}}  # fmt: skip
    return {"seed": seed, "endpoints": {
        "*": reads,
        "POST /api/v3/order": create,
        "DELETE /api/v3/order": {"late_fill": 0.25, "cancel_timeout": 0.1, "5xx": 0.02},
        "GET /api/v3/myTrades": reads | {"duplicate_trade": 0.02},
    }}  # fmt: skip


# processes and HTTP -----------------------------------------------------------------------------------------------


def exe() -> str:
    "The `intraday` command beside the running python."
    return str(Path(sys.executable).parent / "intraday")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: dict | None = None, token: str | None = None, timeout: float = 5.0):
    "(status, parsed JSON or text); status None and the error's text when the request failed."
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read().decode()
            status = r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read().decode(errors="replace"), e.code
    except (OSError, TimeoutError) as e:
        return None, f"{type(e).__name__}: {e}"
    try:
        return status, json.loads(raw)
    except json.JSONDecodeError:
        return status, raw


def last_traceback(text: str, lines: int = 3) -> list[str]:
    "The last lines of the last Python traceback in `text` (the exception and the frames just above it)."
    at = text.rfind("Traceback (most recent call last)")
    if at < 0:
        return []
    tb = [x for x in text[at:].splitlines() if x.strip()]
    end = next((i for i, x in enumerate(tb) if i > 0 and not x.startswith(" ")), len(tb) - 1)
    return tb[max(1, end - lines + 1) : end + 1]


def origin(text: str) -> str | None:
    "The deepest frame of the last traceback in `text` that is intraday's own code ('live.py:333 in start')."
    at = text.rfind("Traceback (most recent call last)")
    frames = re.findall(r'File "[^"]*/intraday/([^"/]+\.py)", line (\d+), in (\S+)', text[at:]) if at >= 0 else []
    return f"{frames[-1][0]}:{frames[-1][1]} in {frames[-1][2]}" if frames else None


class Proc:
    "A child process with its stdout and stderr in files; `stopped` once the harness stopped it on purpose."

    def __init__(self, name: str, args: list[str], env: dict, logs: Path):
        self.name, self.args = name, args
        self.out, self.err = logs / f"{name}.stdout", logs / f"{name}.stderr"
        with open(self.out, "w") as o, open(self.err, "w") as e:
            self.p = subprocess.Popen(args, env=env, stdout=o, stderr=e, cwd=ROOT, start_new_session=True)
        self.t0, self.stopped, self.url, self.reported = time.time(), False, None, False

    def alive(self) -> bool:
        return self.p.poll() is None

    def stderr(self) -> str:
        return self.err.read_text(errors="replace") if self.err.exists() else ""

    def stdout(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    def kill9(self) -> None:
        "SIGKILL (an explicit stop)."
        self.stopped = True
        if self.alive():
            os.kill(self.p.pid, signal.SIGKILL)
        self.p.wait()


class Stepper(threading.Thread):
    "Steps the venue's clock one bar every `step_s` seconds (steady: a late step does not shorten the next one)."

    def __init__(self, step_s: float):
        super().__init__(daemon=True)
        self.step_s, self.url = step_s, None
        self.count, self.errors, self.last_time = 0, 0, None
        self.paused, self.done = threading.Event(), threading.Event()
        self.lock = threading.Lock()

    def step_once(self) -> bool:
        status, body = http("POST", f"{self.url}/admin/step", {}, timeout=5)
        if status == 200 and isinstance(body, dict):
            with self.lock:
                self.count += 1
                self.last_time = int(body["time"])
            return True
        self.errors += 1
        return False

    def run(self) -> None:
        nxt = time.time()
        while not self.done.is_set():
            if self.paused.is_set() or self.url is None:
                time.sleep(0.01)
                nxt = time.time()
                continue
            self.step_once()
            nxt += self.step_s
            time.sleep(max(0.0, nxt - time.time()))
            if time.time() - nxt > 5 * self.step_s:  # far behind (a slow venue): start afresh, no burst of steps
                nxt = time.time()


# the harness --------------------------------------------------------------------------------------------------------


@dataclass
class Segment:
    "One journal (state directory, runner name) on one venue instance."

    name: str
    state: Path
    ledgers: list = field(default_factory=list)  # ledgers of venues this journal traded on (captured)
    cut_seq: int | None = None  # journal events up to this seq are audited (the venue was lost after it)
    cut_seqs: dict = field(default_factory=dict)  # a basket's: journal folder -> its cut_seq


class Soak:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.out = Path(cfg.out).resolve()
        self.logs = self.out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.events: list[dict] = []  # what the harness did and saw, in order
        self.crashes: list[dict] = []
        self.refusals: list[dict] = []
        self.exits: list[dict] = []
        self.halts_seen: list[dict] = []
        self.control: list[dict] = []
        self.swaps: list[dict] = []
        self.harness_errors: list[str] = []
        self.cold: list[str] = []  # runners that came up without their warm-up history
        self.disk: dict = {}
        self.decisions: dict[str, int] = {}  # runner -> decisions, from its /state
        self.fault_counts: Counter = Counter()
        self.kills = self.restarts = self.n_runner = self.n_venue = 0
        self.runner: Proc | None = None
        self.venue: Proc | None = None
        self.segments: list[Segment] = []
        self.restart_at, self.backoff, self.consecutive = 0.0, 1.0, 0
        self.halted_since: int | None = None
        self.hold_resume = False  # the venue restart's halt is kept (it ends the segment)
        self.mounted = False
        self.stepper = Stepper(cfg.step_s)
        self.t0 = time.time()

    # bookkeeping
    @property
    def bar(self) -> int:
        return self.stepper.count

    def note(self, kind: str, **info) -> dict:
        e = {"bar": self.bar, "t": round(time.time() - self.t0, 2), "kind": kind, **info}
        self.events.append(e)
        print(f"[soak {e['t']:7.1f}s bar {self.bar:5d}] {kind} {json.dumps(info, default=str)[:300]}", flush=True)
        return e

    def env(self, **extra) -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
        env |= {"INTRADAY_API_KEY": KEY, "INTRADAY_API_SECRET": SECRET, "INTRADAY_CONTROL_TOKEN": TOKEN,
                "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # fmt: skip
        return env | {k: str(v) for k, v in extra.items()}

    # setup
    def prepare(self) -> None:
        c = self.cfg
        n_days = (WARM + c.bars + 4 * c.rebase_bars + 600) / 1440 + 1
        bars = synth_market(days=n_days, seed=c.seed)
        self.data = write_bars(bars, self.out / "bars.parquet", meta={"symbol": SYMBOL, "timeframe": "1m"})
        t = time.time()
        if c.bundles and all((Path(c.bundles) / k / MANIFEST_FILE).is_file() for k in ("mlp", "hold", "flip")):
            self.bundles = {k: Path(c.bundles) / k for k in ("mlp", "hold", "flip")}
        else:
            self.bundles = make_bundles(self.out / "bundles", c.seed)
        self.prepare_common()
        shutil.copytree(self.bundles["hold"], self.live_bundle)
        self.note("bundles", seconds=round(time.time() - t, 1), **{k: str(v) for k, v in self.bundles.items()})

    def prepare_common(self) -> None:
        "The fault profile, the live bundle's folder (empty), the state root on a tmpfs, the port, the first segment."
        c = self.cfg
        (self.out / "faults.json").write_text(json.dumps(fault_profile(c.seed), indent=1))
        self.live_bundle = self.out / "live-bundle"
        shutil.rmtree(self.live_bundle, ignore_errors=True)
        self.state_root = self.out / "state"
        if os.path.ismount(self.state_root):
            subprocess.run(["umount", str(self.state_root)], check=False)
        shutil.rmtree(self.state_root, ignore_errors=True)
        self.state_root.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={c.tmpfs_mb}m", "tmpfs", str(self.state_root)],
                           capture_output=True, text=True)  # fmt: skip
        self.mounted = r.returncode == 0
        self.note("tmpfs", mounted=self.mounted, size_mb=c.tmpfs_mb, error=r.stderr.strip()[:200] or None)
        self.port = free_port()
        self.segments.append(Segment("s0", self.state_root / "s0"))

    def schedule(self) -> list[tuple[int, str, str | None]]:
        "Events at bars: hot swaps, disk full and freed, journal corruption, venue restart, /kill; kill -9s between."
        n, c = self.cfg.bars, self.cfg
        ev = [(0.20, "swap", "flip"), (0.35, "disk_full", None), (0.45, "swap", "mlp"), (0.55, "corrupt", None),
              (0.62, "venue_restart", None), (0.75, "swap", "flip"), (0.80, "control_kill", None),
              (0.90, "swap", "hold")]  # fmt: skip
        out = [(int(f * n), k, a) for f, k, a in ev]
        out.append((int(0.35 * n) + (c.full_bars or n // 25), "disk_free", None))
        busy = [b for b, _, _ in out]
        gap = max(10, n // 40)  # a restart takes ~40 bars at 0.15 s: each event meets a runner that is up
        cand = [b for b in range(int(0.03 * n), int(0.97 * n)) if all(abs(b - x) > gap for x in busy)]
        kills: list[int] = []
        for b in self.rng.sample(cand, len(cand)):
            if len(kills) == c.kills:
                break
            if all(abs(b - k) > gap for k in kills):
                kills.append(b)
        out += [(b, "kill9", None) for b in kills]
        return sorted(out, key=lambda e: e[0])

    # venue
    def start_venue(self, start: int) -> None:
        self.n_venue += 1
        args = [exe(), "venue", "serve", "--data", str(self.data), "--port", str(self.port), "--step",
                *self.market_args()]  # fmt: skip
        if self.cfg.faults:
            args += ["--faults", str(self.out / "faults.json"), "--seed", str(self.cfg.seed + self.n_venue)]
        self.venue = Proc(f"venue-{self.n_venue}", args, self.env(INTRADAY__VENUE__START=start), self.logs)
        t = time.time()
        while "paper venue for" not in self.venue.stdout():
            if not self.venue.alive() or time.time() - t > 60:
                raise RuntimeError(f"the venue did not start: {self.venue.stderr()[-2000:]}")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"
        self.stepper.url = self.url
        self.note("venue up", start=start, seconds=round(time.time() - t, 1), pid=self.venue.p.pid)

    def capture_venue(self) -> dict:
        "The venue's ledger and fault counts (its truth, before it goes)."
        _, ledger = http("GET", f"{self.url}/admin/ledger", timeout=30)
        _, faults = http("GET", f"{self.url}/admin/faults", timeout=30)
        if isinstance(faults, dict):
            self.fault_counts.update(faults.get("counts") or {})
        if not isinstance(ledger, dict):
            raise RuntimeError(f"no ledger from the venue: {ledger}")
        return ledger

    def market_args(self) -> list[str]:
        "What the venue and the runner are told of the market: its symbol (a basket's file and bundle say it)."
        return ["--symbol", SYMBOL]

    def journal_dirs(self, seg: Segment) -> list[Path]:
        "The segment's journal folders (a basket's: one per symbol)."
        return [seg.state]

    # runner
    def start_runner(self) -> None:
        seg = self.segments[-1]
        self.n_runner += 1
        env = self.env(INTRADAY__LIVE__RUNNER=seg.name, INTRADAY__LIVE__RECONCILE_EVERY_S=self.cfg.reconcile_s,
                       INTRADAY__OBS__LOG_FILE=self.logs / f"runner-{self.n_runner:03d}.jsonl",
                       INTRADAY__OBS__LOG_LEVEL="INFO")  # fmt: skip
        args = [exe(), "live", "--bundle", str(self.live_bundle), "--url", self.url, "--state-dir", str(seg.state),
                "--metrics-port", "0", *self.market_args()]  # fmt: skip
        self.runner = Proc(f"runner-{self.n_runner:03d}", args, env, self.logs)
        self.runner.segment = seg.name
        self.halted_since = None

    def runner_url(self) -> str | None:
        r = self.runner
        if r is not None and r.url is None:
            m = re.search(r"metrics and control: (http://\S+)/metrics", r.stderr())
            r.url = m.group(1) if m else None
        return None if r is None else r.url

    def state(self, timeout: float = 2.0) -> dict | None:
        url = self.runner_url()
        if not url or not self.runner.alive():
            return None
        status, body = http("GET", f"{url}/state", timeout=timeout)
        return body if status == 200 and isinstance(body, dict) else None

    def check_exit(self, expect_refusal: bool = False) -> dict | None:
        "Classify a runner that exited (crash, refusal, or the harness's stop); restart scheduling."
        r = self.runner
        if r is None or r.alive() or r.reported:
            return None
        r.reported = True
        rc, err = r.p.returncode, r.stderr()
        tb = last_traceback(err)
        tail = [x for x in err.splitlines() if x.strip()][-2:]
        info = {"runner": r.name, "segment": r.segment, "rc": rc, "up_s": round(time.time() - r.t0, 1),
                "traceback": tb, "origin": origin(err), "last_stderr": tail}  # fmt: skip
        if r.stopped and not tb:
            return None
        if expect_refusal and rc != 0 and not tb and JOURNAL_FILE in err:
            self.refusals.append(info | {"bar": self.bar})
            self.note("refusal", **info)
            return info
        self.crashes.append(info | {"bar": self.bar})
        self.note("CRASH", **info)
        quick = time.time() - r.t0 < 30
        self.consecutive = self.consecutive + 1 if quick else 1
        self.backoff = min(8.0, 1.0 * 2 ** (self.consecutive - 1))
        self.restart_at = time.time() + self.backoff
        self.runner = None
        return info

    def ensure_ready(self, timeout: float = 90.0) -> dict | None:
        "A runner up and answering /state, warm if it gets warm within 10 s (started if none); its /state."
        t, up = time.time(), None
        while time.time() - t < timeout:
            if self.runner is None or not self.runner.alive():
                if self.runner is not None:
                    self.check_exit()
                self.start_runner()
                self.restarts += 1
                up = None
            st = self.state()
            if st and st.get("warm"):
                return st
            if st and up is None:
                up = time.time()
            if st and time.time() - up > 10:  # up but cold: its warm-up history came back short
                if self.runner.name not in self.cold:
                    self.cold.append(self.runner.name)
                    self.note("runner up but not warm", runner=self.runner.name)
                return st
            time.sleep(0.2)
        return None

    def wait_caught_up(self, timeout: float = 10.0) -> dict | None:
        "With the clock paused: the runner has handled the last bar (and its order is acked)."
        want = (self.stepper.last_time or 0) - STEP_MS
        t = time.time()
        while time.time() - t < timeout:
            st = self.state()
            if st and (st.get("last_bar") or {}).get("ts", -1) >= want:
                time.sleep(0.5)
                return self.state()
            time.sleep(0.1)
        return None

    # events
    def swap(self, name: str) -> None:
        "Copy another bundle into the runner's --bundle folder: policy.pt first, then manifest.json (what is watched)."
        self.ensure_ready()  # a hot swap: the runner is trading when the new bundle lands
        src = self.bundles[name]
        files = (*SIGNED_FILES, SIGNATURE_FILE)  # every file first to a temp name, then each renamed in place
        for f in files:
            shutil.copyfile(src / f, self.live_bundle / f".{f}.tmp")
        for f in files:
            os.replace(self.live_bundle / f".{f}.tmp", self.live_bundle / f)
        self.note("hot swap", bundle=name)
        want, t0, wall = json.loads((src / MANIFEST_FILE).read_text())["policy_sha256"], self.bar, time.time()
        while self.bar - t0 < 20 or time.time() - wall < 15:  # a loaded machine: a verified load takes seconds
            st = self.state()
            if st and st["bundle"]["sha256"] == want:
                self.swaps.append({"bundle": name, "bar": self.bar, "result": "trading", "bars": self.bar - t0})
                return
            time.sleep(0.05)
        got = (self.state() or {}).get("bundle")
        self.swaps.append({"bundle": name, "bar": self.bar, "result": "not seen in 20 bars and 15 s", "state": got})
        self.note("hot swap not seen", state=got)

    def kill9(self) -> None:
        time.sleep(self.rng.uniform(0, self.cfg.step_s))  # a random instant within the bar
        if self.runner is None or not self.runner.alive():
            if self.bar + 10 < self.cfg.bars:  # the runner is down (crashed): kill the next one
                self.plan.insert(0, (self.bar + 10, "kill9", None))
                self.plan.sort(key=lambda e: e[0])
            self.note("kill9 deferred 10 bars: no runner up")
            return
        name = self.runner.name
        self.runner.kill9()
        self.kills += 1
        self.check_exit()
        self.note("kill -9", runner=name)
        self.start_runner()
        self.restarts += 1

    def disk_full(self) -> None:
        if not self.mounted:
            self.note("disk full skipped: no tmpfs mount")
            return
        ballast = self.state_root / "ballast"
        written = 0
        try:
            with open(ballast, "wb") as f:
                chunk = b"\0" * (1 << 20)
                while True:
                    f.write(chunk)
                    f.flush()
                    written += len(chunk)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
        st = os.statvfs(self.state_root)
        self.disk = {"bar": self.bar, "ballast_mb": round(written / 2**20, 1), "crashes_before": len(self.crashes)}
        self.note("disk full", ballast_mb=self.disk["ballast_mb"], free_bytes=st.f_bavail * st.f_frsize)

    def disk_free(self) -> None:
        self.check_exit()  # a runner that died while the disk was full counts there
        (self.state_root / "ballast").unlink(missing_ok=True)
        if self.disk:
            during = self.crashes[self.disk["crashes_before"] :]
            self.disk |= {"freed_at": self.bar, "crashes_while_full": [(c["traceback"] or ["?"])[-1] for c in during]}
        self.note("disk freed", **self.disk)

    def corrupt(self) -> None:
        "Stop the runner, overwrite a page in the middle of journal.sqlite, start: it must refuse naming the file."
        if self.runner is not None:
            self.runner.kill9()
            self.check_exit()
        self.runner = None
        seg = self.segments[-1]
        jdir = self.journal_dirs(seg)[0]  # a basket's first symbol's: the runner opens every journal at its start
        path = jdir / JOURNAL_FILE
        if not path.is_file():
            self.note("corrupt skipped: no journal yet")
            return
        with sqlite3.connect(path) as db:  # the WAL into the main file: the page overwritten holds events
            page = db.execute("PRAGMA page_size").fetchone()[0]
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
        backup = self.out / f"journal-backup-{seg.name}"
        shutil.rmtree(backup, ignore_errors=True)
        backup.mkdir()
        for f in jdir.glob(JOURNAL_FILE + "*"):
            shutil.copy2(f, backup / f.name)
        pages = path.stat().st_size // page
        at = max(1, pages // 2)
        with open(path, "r+b") as f:
            f.seek(at * page)
            f.write(bytes([0xA5]) * page)
        self.note("journal page corrupted", page=at, pages=pages, page_size=page)
        self.start_runner()
        self.restarts += 1
        t, outcome = time.time(), "undetected: the runner came up and traded on"
        while time.time() - t < 45:
            if not self.runner.alive():
                n = len(self.refusals)
                info = self.check_exit(expect_refusal=True)
                outcome = "refused" if len(self.refusals) > n else "crashed" if info else "exited"
                break
            st = self.state()
            if st and st.get("warm") and time.time() - t > 5:
                self.runner.kill9()
                self.check_exit()
                break
            time.sleep(0.2)
        self.note("corrupted journal", outcome=outcome)
        self.corruption = outcome
        for f in jdir.glob(JOURNAL_FILE + "*"):
            f.unlink()
        for f in backup.iterdir():
            shutil.copy2(f, jdir / f.name)
        self.note("journal restored from the copy taken before the corruption")
        self.runner = None
        self.start_runner()
        self.restarts += 1

    def venue_restart(self) -> None:
        "Kill the venue, start it again on a rebased clock (fresh ledger): the runner must halt on the mismatch."
        self.stepper.paused.set()
        self.ensure_ready()
        st = self.wait_caught_up()
        seg = self.segments[-1]
        ledger = self.capture_venue()
        seg.ledgers.append(ledger)
        for d in self.journal_dirs(seg):
            with sqlite3.connect(f"file:{d / JOURNAL_FILE}?mode=ro", uri=True) as db:
                seg.cut_seqs[d.name] = db.execute("SELECT max(seq) FROM events").fetchone()[0]
            db.close()
        seg.cut_seq = seg.cut_seqs[seg.state.name] if seg.state.name in seg.cut_seqs else None
        cursor = ledger["cursor"]
        self.venue.kill9()
        held = (st or {}).get("position")
        self.note("venue killed", cursor=cursor, runner_position=held,
                  venue_balances={k: v["total"] for k, v in ledger["balances"].items()})  # fmt: skip
        self.start_venue(cursor + self.cfg.rebase_bars)
        time.sleep(self.cfg.reconcile_s + 1)  # the runner's next bar reconciles
        self.hold_resume = True
        self.stepper.paused.clear()
        t0, reason, wall = self.bar, None, time.time()
        # the runner may put a difference down to orders sent within [live] unknown_grace_s, for at most twice that
        # (a runner trading every bar always has one): wait for that bound and a reconciliation after it
        bound = 2 * LiveSettings().unknown_grace_s + self.cfg.reconcile_s + 5
        while self.bar - t0 < 60 or time.time() - wall < bound:
            if self.runner is not None and not self.runner.alive():
                self.check_exit()
                self.ensure_ready()
            st = self.state()
            if st and st.get("trading_state") == "HALTED":
                reason = st.get("reason")
                break
            time.sleep(0.1)
        self.venue_restart_halt = reason
        self.note("venue restart", detected=reason is not None, halt_reason=reason, bars_to_detect=self.bar - t0)
        if self.runner is not None:
            self.runner.kill9()
            self.check_exit()
        self.runner = None
        new = Segment(f"s{len(self.segments)}", self.state_root / f"s{len(self.segments)}")
        self.segments.append(new)
        self.hold_resume = False
        self.note("new segment", segment=new.name, state=str(new.state))
        self.start_runner()
        self.restarts += 1

    def control_kill(self) -> None:
        "/kill while cancels hang (cancel_timeout injected), then /resume: both must answer promptly."
        self.stepper.paused.set()
        st = self.ensure_ready()
        open_orders = []
        for _ in range(8):
            st = self.state()
            open_orders = (st or {}).get("open_orders") or []
            if open_orders:
                break
            self.stepper.step_once()
            t = time.time()
            while time.time() - t < 1.5:
                st = self.state()
                if st and st.get("open_orders"):
                    open_orders = st["open_orders"]
                    break
                time.sleep(0.02)
            if open_orders:
                break
        http("POST", f"{self.url}/admin/fault", {"endpoint": "DELETE /api/v3/order", "kind": "cancel_timeout",
                                                 "count": 3})  # fmt: skip
        url = self.runner_url()
        s401, _ = http("POST", f"{url}/kill", {"reason": "no token"}, timeout=5)
        self.hold_resume = True
        t = time.time()
        status, body = http("POST", f"{url}/kill", {"reason": "soak: /kill under hanging cancels"}, TOKEN, timeout=20)
        kill_s = time.time() - t
        self.stepper.paused.clear()
        time.sleep(self.cfg.step_s * 5)
        st = self.state(timeout=5)
        t = time.time()  # while the kill's cancels still hang, a resume is refused at once (409, with the reason)
        early, ebody = http("POST", f"{url}/resume", {"reason": "soak: resume after /kill"}, TOKEN, timeout=20)
        early_s, waited = time.time() - t, time.time()
        while early == 409 and time.time() - waited < 60:  # as an operator: resume once /state says the kill ended
            if not (((self.state(timeout=5) or {}).get("kill") or {}).get("running")):
                break
            time.sleep(0.5)
        t = time.time()
        rstatus, rbody = http("POST", f"{url}/resume", {"reason": "soak: resume after /kill"}, TOKEN, timeout=20)
        resume_s = time.time() - t
        self.hold_resume = False
        rec = {"open_orders_at_kill": len(open_orders), "no_token_status": s401, "kill_status": status,
               "kill_seconds": round(kill_s, 3), "kill_body": str(body)[:200],
               "state_after_kill": (st or {}).get("trading_state"), "reason_after_kill": (st or {}).get("reason"),
               "early_resume_status": early, "early_resume_seconds": round(early_s, 3),
               "early_resume_body": str(ebody)[:200], "kill_cancels_seconds": round(t - waited, 1),
               "resume_status": rstatus, "resume_seconds": round(resume_s, 3), "resume_body": str(rbody)[:200],
        }  # fmt: skip
        self.control.append(rec)
        self.note("control /kill + /resume", **rec)

    def watch_halts(self) -> None:
        "Record halts seen on /state; resume the runner after `resume_after` bars (an operator would)."
        st = self.state(timeout=1.0)
        if not st:
            return
        self.decisions[self.runner.name] = max(self.decisions.get(self.runner.name, 0), st.get("decisions") or 0)
        if st.get("trading_state") != "HALTED":
            self.halted_since = None
            return
        if self.halted_since is None:
            self.halted_since = self.bar
            self.halts_seen.append({"bar": self.bar, "runner": self.runner.name, "reason": st.get("reason")})
            self.note("halt", reason=st.get("reason"))
        elif not self.hold_resume and self.bar - self.halted_since >= self.cfg.resume_after:
            status, _ = http("POST", f"{self.runner_url()}/resume", {"reason": "soak: operator resume"}, TOKEN, 10)
            self.note("resume", status=status)
            self.halted_since = None

    # the run
    def run(self) -> dict:
        self.prepare()
        plan = self.plan = self.schedule()
        (self.out / "schedule.json").write_text(json.dumps(plan))
        self.start_venue(WARM)
        self.start_runner()
        if self.ensure_ready() is None:
            raise RuntimeError(f"the runner did not come up: {self.runner.stderr()[-3000:]}")
        self.note("runner up", runner=self.runner.name)
        self.stepper.start()
        last_poll = 0.0
        while self.bar < self.cfg.bars:
            while plan and plan[0][0] <= self.bar:
                _, kind, arg = plan.pop(0)
                try:
                    getattr(self, kind)(*([arg] if arg else []))
                except Exception as e:  # a harness bug or a dead venue: say so, go on with the run
                    self.harness_errors.append(f"{kind}: {type(e).__name__}: {e}")
                    self.note("HARNESS ERROR", event=kind, error=f"{type(e).__name__}: {e}")
                    self.stepper.paused.clear()
            if self.runner is not None and not self.runner.alive():
                self.check_exit()
            if self.runner is None and time.time() >= self.restart_at:
                self.start_runner()
                self.restarts += 1
            if self.runner is not None and self.runner.alive() and time.time() - self.runner.t0 > 60:
                self.consecutive = 0
            if time.time() - last_poll > 1.0:
                last_poll = time.time()
                self.watch_halts()
            time.sleep(0.02)
        self.stepper.paused.set()
        return self.finish()

    def finish(self) -> dict:
        "Let the runner catch up, capture the venue, stop everything, audit every segment."
        self.ensure_ready()
        self.wait_caught_up()
        time.sleep(1.0)
        seg = self.segments[-1]
        seg.ledgers.append(self.capture_venue())
        if self.runner is not None:
            self.runner.kill9()
            self.check_exit()
        self.stepper.done.set()
        self.venue.kill9()
        for r in sorted(self.logs.glob("runner-*.stderr")):  # tracebacks printed by runners still alive at a stop
            text = r.read_text(errors="replace")
            if "Traceback" in text and not any(c["runner"] == r.stem for c in self.crashes):
                info = {"runner": r.stem, "rc": None, "traceback": last_traceback(text), "bar": None}
                self.crashes.append(info)
                self.note("CRASH (traceback on stderr of a runner stopped by the harness)", **info)
        audits = [a for s in self.segments for a in self.audits(s)]
        return self.summary(audits)

    def audits(self, seg: Segment) -> list[dict]:
        "The audits of a segment: its journal's (a basket's: each symbol's)."
        return [self.audit(seg)]

    def audit(self, seg: Segment, base: str = BASE) -> dict:
        "ledger_audit of a segment's journal (cut at the venue's loss, if any) against its venue's ledger."
        copy = self.out / "journals" / seg.name
        shutil.rmtree(copy, ignore_errors=True)
        copy.mkdir(parents=True)
        for f in seg.state.glob(JOURNAL_FILE + "*"):
            shutil.copy2(f, copy / f.name)
        after = {}
        if seg.cut_seq is not None:
            j = Journal.open(copy)
            late = [e for e in j.events() if e["seq"] > seg.cut_seq]
            new = {e["client_id"] for e in late if e["kind"] == "intent"}
            sent = [c for c in new if j.orders[c].status.value not in ("DENIED", "INITIALIZED")]
            after = {"events_after_venue_loss": len(late), "intents_after_venue_loss": len(new),
                     "orders_sent_after_venue_loss": len(sent),
                     "halts_after_venue_loss": [e["data"]["risk"].get("reason") for e in late
                                                if e["kind"] == "state" and "risk" in e["data"]]}  # fmt: skip
            j.db.execute("DELETE FROM events WHERE seq > ?", (seg.cut_seq,))
            j.close()
        j = Journal.open(copy)
        ledger = dict(seg.ledgers[0])
        for later in seg.ledgers[1:]:  # orders this journal's runner sent to a later venue (same client prefix)
            ledger["orders"] = ledger["orders"] + [o for o in later["orders"]
                                                   if o["clientOrderId"].startswith(j.prefix + "-")]  # fmt: skip
        a = ledger_audit(ledger, j, base)
        halts = []
        for e in Journal.open(seg.state if seg.state.exists() else copy).events():
            risk = e["data"].get("risk") if e["kind"] == "state" else None
            if risk and risk.get("state") == "HALTED":
                halts.append(risk.get("reason") or "")
        j.close()
        return {"segment": seg.name, **a, "fills": len(ledger["trades"]), "halts": halts, **after}

    def summary(self, audits: list[dict]) -> dict:
        decisions, swaps, errors = 0, Counter(), Counter()
        for f in sorted(self.logs.glob("runner-*.jsonl")):
            n = 0
            for text in f.read_text(errors="replace").splitlines():
                try:
                    rec = json.loads(text)["record"]
                except (json.JSONDecodeError, KeyError, TypeError):  # a line a kill -9 cut short
                    continue
                msg = rec["message"]
                n += msg.startswith("decision at bar")
                if msg.startswith("bundle swapped between bars"):
                    swaps["accepted"] += 1
                elif msg.startswith("new bundle refused"):
                    swaps["refused"] += 1
                if rec["level"]["name"] in ("ERROR", "CRITICAL"):
                    errors[re.sub(r"\d[\d.]*", "N", msg.splitlines()[0])[:90]] += 1
            decisions += max(n, self.decisions.get(f.stem, 0))  # a crash can lose the log's queued tail
        halts = Counter()
        for a in audits:
            prev = None
            for h in a["halts"]:
                if h != prev:
                    halts[cause(h)] += 1
                prev = h
        tot = {k: sum(a[k] for a in audits) for k in ("orders", "venue_orders", "fills", "duplicates", "lost",
                                                        "mismatches", "unresolved")}  # fmt: skip
        s = {
            "simulated_hours": round(self.bar / 60, 2),
            "bars": self.bar,
            "decisions": decisions,
            **tot,
            "faults": sum(self.fault_counts.values()),
            "faults_by_kind": dict(self.fault_counts),
            "kills": self.kills,
            "restarts": self.restarts,
            "crashes": len(self.crashes),
            "crash_list": self.crashes,
            "crash_causes": dict(
                Counter(
                    f"{(c['traceback'] or c.get('last_stderr') or ['?'])[-1]} (at {c.get('origin')})"
                    for c in self.crashes
                )
            ),
            "refusals": self.refusals,
            "halts": dict(halts),
            "halts_seen": self.halts_seen,
            "swaps": dict(swaps),
            "swap_checks": self.swaps,
            "harness_errors": self.harness_errors,
            "cold_starts": self.cold,
            "disk_full": self.disk,
            "log_errors": dict(errors.most_common(20)),
            "control": self.control,
            "control_slow": sum(slow(c, k) for c in self.control for k in ("kill", "early_resume", "resume")),
            "corrupted_journal": getattr(self, "corruption", None),
            "venue_restart_halt": getattr(self, "venue_restart_halt", None),
            "tmpfs": self.mounted,
            "audits": audits,
            "wall_seconds": round(time.time() - self.t0, 1),
            "step_errors": self.stepper.errors,
            "config": {k: str(v) for k, v in asdict(self.cfg).items()},
            "events": self.events,
        }
        return s

    def cleanup(self) -> None:
        self.stepper.done.set()
        for p in (self.runner, self.venue):
            if p is not None and p.alive():
                p.kill9()
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.state_root)], check=False)


OK_STATUS = {"kill": (202,), "resume": (200,), "early_resume": (200, 409)}  # 409: refused while the cancels run


def slow(c: dict, k: str) -> bool:
    "A control call (/kill, /resume, or a /resume while the kill's cancels run) that failed or took over 2 s."
    return c[f"{k}_status"] not in OK_STATUS[k] or c[f"{k}_seconds"] > 2.0


def cause(reason: str) -> str:
    "A halt's cause: its reason up to the first colon, ids and numbers masked ('position mismatch', 'killed')."
    r = re.sub(r"\b\w+-\w+-\w+\b", "<order>", reason or "?")  # client ids
    head = re.split(r"[:;]", re.sub(r"\d[\d.]*", "N", r), maxsplit=1)[0].strip()
    return head or r[:40]


def line(s: dict) -> str:
    halts = ", ".join(f"{k} {v}" for k, v in sorted(s["halts"].items())) or "none"
    return (
        f"soak: {s['simulated_hours']:g} simulated hours, {s['decisions']} decisions, {s['orders']} orders "
        f"({s['venue_orders']} reached the venue), "
        f"{s['faults']} faults, {s['kills']} kills, {s['crashes']} crashes, {s['duplicates']} duplicates, "
        f"{s['lost']} lost, {s['mismatches']} mismatches, halts by cause: {halts}; "
        f"{s['control_slow']} slow or failed /kill or /resume ({s['wall_seconds']:g} s)"
    )


def parse(argv=None) -> Config:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--short", action="store_true", help="the CI version: 1 day, 1,440 bars at 0.15 s, 3 kill -9s")
    ap.add_argument("--bars", type=int, help="bars stepped (default 4,320; --short 1,440)")
    ap.add_argument("--step-s", type=float, help="wall seconds per bar (default 0.17; --short 0.15)")
    ap.add_argument("--kills", type=int, help="kill -9s of the runner (default 12; --short 3)")
    ap.add_argument("--seed", type=int, default=20)
    ap.add_argument("--no-faults", action="store_true", help="no fault profile on the venue")
    ap.add_argument("--out", type=Path, help="work folder (default reports/soak/<UTC time>)")
    ap.add_argument("--bundles", type=Path, help="reuse bundles made by an earlier run (<out>/bundles)")
    ap.add_argument("--basket", action="store_true", help="a basket of 3 symbols on one account (tests/soak/basket.py)")
    a = ap.parse_args(argv)
    short = {"bars": 1440, "step_s": 0.15, "kills": 3} if a.short else {}
    out = a.out or ROOT / "reports" / "soak" / time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    cfg = Config(out=out, seed=a.seed, faults=not a.no_faults, bundles=a.bundles, basket=a.basket, **short)
    for k in ("bars", "step_s", "kills"):
        if getattr(a, k) is not None:
            setattr(cfg, k, getattr(a, k))
    return cfg


def main(argv=None) -> int:
    cfg = parse(argv)
    if cfg.basket:
        from basket import BasketSoak

        soak = BasketSoak(cfg)
    else:
        soak = Soak(cfg)
    try:
        s = soak.run()
    finally:
        soak.cleanup()
    (soak.out / "summary.json").write_text(json.dumps(s, indent=1, default=str))
    print(line(s))
    print(f"summary: {soak.out / 'summary.json'}; logs: {soak.logs}")
    bad = s["crashes"] + s["duplicates"] + s["lost"] + s["mismatches"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
