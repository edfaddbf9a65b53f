"""Probe: which synth settings transfer to real rain/haze pairs (used to choose the smoke profile's synth.photo.*
and train.clean_pair_fraction; figures in docs/real-weather.md).

This is a quick exploration, NOT the platform's training loop: a bare L1 loop (AdamW, cosine, batch 8) on the smoke
NAFNet, several settings trained at once on one GPU, each evaluated (whole-image inference, TLC on) at several step
counts on small real pair sets. Step counts were chosen to bracket what the 2-core CPU does in about 10 minutes.

    # once, here: a small copy of the dev pairs (short side <= 600 px) into .probe/dev/
    .venv/bin/python benchmarks/probe_synth_transfer.py --prepare devdata .probe/dev
    # on a GPU machine (the device tool), with .probe carried:
    OUT=$OUT PYTHONPATH=platform python3 benchmarks/probe_synth_transfer.py

The settings list (``jobs``) is edited between batteries; the two batteries of this session are in the docs.
"""

import glob
import json
import math
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

OUT = os.environ.get("OUT", "/tmp/probe_out")
DEV = os.environ.get(
    "PROBE_DEV", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".probe", "dev")
)
SETS = ["rain100l", "rain100h", "rain200h", "ddn_sirr_test", "ddn_synthetic", "sots_outdoor", "o_haze"]


def prepare(src: str, dst: str) -> None:
    """Copy a few pairs of each dev set, downscaled to a short side of at most 600 px, as PNG."""
    limits = {"rain100h": 30, "rain100l": 5, "rain200h": 3, "ddn_synthetic": 3, "ddn_sirr_test": 10,
              "sots_outdoor": 2, "o_haze": 3}  # fmt: skip
    for s, n in limits.items():
        for f in sorted(glob.glob(f"{src}/{s}/input/*"))[:n]:
            stem = os.path.splitext(os.path.basename(f))[0]
            t = glob.glob(f"{src}/{s}/target/{stem}.*")[0]
            for role, p in (("input", f), ("target", t)):
                im = Image.open(p).convert("RGB")
                if min(im.size) > 600:
                    r = 600 / min(im.size)
                    im = im.resize((round(im.size[0] * r), round(im.size[1] * r)), Image.Resampling.LANCZOS)
                os.makedirs(f"{dst}/{s}/{role}", exist_ok=True)
                im.save(f"{dst}/{s}/{role}/{stem}.png")


def make_data(name, overrides):
    from fairweather.contracts.config import load_config
    from fairweather.synth import generate

    cfg = load_config(
        "smoke",
        [
            f"synth.out=/tmp/pd/{name}",
            "synth.num_paired=900",
            "synth.size=[128,128]",
            "synth.num_unlabeled=0",
            *overrides,
        ],
    )
    generate(cfg.synth)
    return name


def load(p):
    return torch.from_numpy(np.asarray(Image.open(p).convert("RGB"), np.float32) / 255).permute(2, 0, 1)


def psnr(a, b):
    return 10 * math.log10(1 / max(((a - b) ** 2).mean().item(), 1e-10))


def evaluate(net, dev):
    net.eval()
    res = {}
    for s in SETS:
        fs = sorted(glob.glob(f"{DEV}/{s}/input/*"))
        a = b = 0
        for f in fs:
            x, y = load(f).to(dev), load(f.replace("/input/", "/target/")).to(dev)
            with torch.no_grad():
                h, w = x.shape[1:]
                ph, pw = (-h) % 16, (-w) % 16
                o = net(F.pad(x[None], (0, pw, 0, ph), mode="reflect"))[0, :, :h, :w].clamp(0, 1)
            a += psnr(x, y)
            b += psnr(o, y)
        res[s] = round((b - a) / len(fs), 2)
    net.train()
    return res


def train(job):
    name, data, crop, width, steps, evals, lr, ident = job
    torch.manual_seed(0)
    np.random.seed(0)
    from fairweather.contracts.config import load_config
    from fairweather.models import build_model

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = load_config("smoke", [f"model.nafnet.width={width}"])
    net = build_model(cfg.model, train_crop_size=crop).to(dev)
    ins = sorted(glob.glob(f"/tmp/pd/{data}/paired/input/*.png"))
    X = torch.stack([load(p) for p in ins]).to(dev)
    Y = torch.stack([load(p.replace("/input/", "/target/")) for p in ins]).to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    out = {"job": job[:5], "evals": {}}
    t0 = time.time()
    for step in range(1, steps + 1):
        frac = step / steps
        for g in opt.param_groups:
            g["lr"] = lr * min(1, step / 50) * 0.5 * (1 + math.cos(math.pi * frac))
        idx = torch.randint(0, len(X), (8,), device=dev)
        H = X.shape[-1]
        i, j = np.random.randint(0, H - crop + 1, 2)
        x, y = X[idx, :, i : i + crop, j : j + crop], Y[idx, :, i : i + crop, j : j + crop]
        if np.random.rand() < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        if ident:
            keep = torch.rand(len(x), 1, 1, 1, device=dev) < ident
            x = torch.where(keep, y, x)
        loss = F.l1_loss(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in evals:
            out["evals"][step] = evaluate(net, dev)
            out["seconds"] = round(time.time() - t0, 1)
            Path(f"{OUT}/probe_{name}.json").write_text(json.dumps(out))
    return out


if __name__ == "__main__":
    if sys.argv[1:2] == ["--prepare"]:
        prepare(sys.argv[2], sys.argv[3])
        sys.exit()
    mp.set_start_method("spawn")
    os.makedirs(OUT, exist_ok=True)
    data = {
        "nomin": ["synth.clean=bundled", "synth.photo.haze_max_mean_t=1.0"],
        "photo": ["synth.clean=bundled"],
        "light": [
            "synth.clean=bundled",
            "synth.photo.haze_max_mean_t=1.0",
            "synth.photo.haze_beta=[0.02,0.12]",
        ],
        "nomin_veil": [
            "synth.clean=bundled",
            "synth.photo.haze_max_mean_t=1.0",
            "synth.photo.rain_veil_prob=0.2",
        ],
    }
    with mp.Pool(4) as pool:
        print(pool.starmap(make_data, data.items()), flush=True)
    E = {1000, 2000, 3000}
    jobs = [
        ("G_nomin", "nomin", 64, 16, 3000, E, 2e-3, 0.0),
        ("H_nomin_id", "nomin", 64, 16, 3000, E, 2e-3, 0.15),
        ("I_photo_id", "photo", 64, 16, 3000, E, 2e-3, 0.15),
        ("J_light_id", "light", 64, 16, 3000, E, 2e-3, 0.15),
        ("K_nominveil_id_c96", "nomin_veil", 96, 16, 1400, {500, 1000, 1400}, 2e-3, 0.15),
        ("L_nominveil_id", "nomin_veil", 64, 16, 3000, E, 2e-3, 0.15),
    ]
    with mp.Pool(len(jobs)) as pool:
        for r in pool.imap_unordered(train, jobs):
            print(json.dumps(r), flush=True)
