"""Make ``data/traces/bursty_workshop.jsonl``: a synthetic trace for replay (``--trace``).

Bursty arrivals — gamma gaps with burstiness 0.5 (c_a² = 2, twice Poisson's variability) at
0.06 requests per model second — carrying the workshop's prompts, each asking for between 40
and 160 tokens (drawn once, seed 14). It is made by the kit, not recorded from a service: it
exists to show how replay works and how burstiness alone lengthens the queue at the same mean
rate. Run from the repository root::

    .venv/bin/python data/make_sample_trace.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from parallel_kit.workload.arrivals import make_schedule, write_trace  # noqa: E402
from parallel_kit.workload.prompts import load_prompts, make_specs  # noqa: E402

SEED = 14


def main() -> Path:
    schedule = make_schedule(0.06, n=60, process="gamma", burstiness=0.5, seed=SEED)
    lengths = np.random.default_rng(SEED).integers(40, 161, size=len(schedule))
    specs = make_specs(len(schedule), load_prompts(ROOT / "data" / "prompts" / "workshop.jsonl"))
    for spec, length in zip(specs, lengths, strict=True):
        spec.num_predict = int(length)
    return write_trace(ROOT / "data" / "traces" / "bursty_workshop.jsonl", schedule, specs)


if __name__ == "__main__":
    print(f"wrote {main()}")
