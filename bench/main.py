"""``python -m bench`` (``make bench``): run the figures, print the table, write bench/results.*.

Environment: ``BENCH_QUICK=1`` for a short smoke run (under ~2 minutes); ``BENCH_ONLY=1,3`` to run some
figures only; ``BENCH_OUT=dir`` to write the results elsewhere (default: bench/); ``BENCH_CACHE_DIR``
for DynamoDB Local's jar (default .data, shared with ``make run``).
"""

from __future__ import annotations

import datetime
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.report import Figure, table, write_chart, write_json, write_markdown
from bench.scenarios import Config, cache_dir, select
from bench.stack import ROOT, Stack

__all__ = ["main"]


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def _meta(cfg: Config, stack: Stack | None) -> dict[str, Any]:
    import agentstream

    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "quick (BENCH_QUICK=1)" if cfg.quick else "full",
        "commit": f"{_git('rev-parse', '--short', 'HEAD')} ({_git('rev-parse', '--abbrev-ref', 'HEAD')})"
        + (" + uncommitted changes" if _git("status", "--porcelain", "--untracked-files=no") else ""),
        "agentstream measured": str(Path(agentstream.__file__).parent),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "store": stack.store_description if stack else "?",
        "prices": "DynamoDB on-demand: $0.625 per million write request units, $0.125 per million read",
        "how to read": "ratio = ours / baseline, both measured in this run; compare ratios, not absolutes",
    }


def main() -> int:
    signal.signal(signal.SIGTERM, _terminate)
    cfg = Config.make(os.environ.get("BENCH_QUICK", "") not in ("", "0"))
    out = Path(os.environ.get("BENCH_OUT") or ROOT / "bench")
    scenarios = select(os.environ.get("BENCH_ONLY"))
    started = time.monotonic()
    figures: list[Figure] = []
    failed: list[str] = []
    stack = Stack(ROOT / ".data" / "bench", cache_dir())
    print(f"agentstream bench ({'quick' if cfg.quick else 'full'}): starting DynamoDB Local, the fake model, "
          "the proxy and the servers ...", flush=True)  # fmt: skip
    try:
        with stack:
            print(f"  store: {stack.store_description}; logs in {stack.logs}", flush=True)
            if "moto" in stack.store_description:
                print("  WARNING: moto fails under concurrent writes: figures 2 and 3 are not reliable. "
                      "Install Java 17+ for DynamoDB Local.", flush=True)  # fmt: skip
            ctx: dict[str, Any] = {
                "openai_agent": stack.create_agent(
                    {"name": "bench-openai", "model": {"provider": "openai", "name": "bench"},
                     "memory": {"enabled": False}}
                )
            }  # fmt: skip
            for number, scenario in scenarios:
                began = time.monotonic()
                print(f"[{number}] {scenario.__name__} ...", flush=True)
                try:
                    stack.check_alive()
                    new = scenario(stack, cfg, ctx)
                except Exception as exc:
                    traceback.print_exc()
                    failed.append(f"{number} {scenario.__name__}: {exc}")
                    continue
                figures += new
                print(table(new), flush=True)
                print(f"    ({time.monotonic() - began:.0f} s)", flush=True)
            meta = _meta(cfg, stack)
    except KeyboardInterrupt:
        print("\ninterrupted: every process the bench started has been stopped", file=sys.stderr)
        return 130
    meta["duration_s"] = round(time.monotonic() - started)
    if failed:
        meta["failed"] = failed
    print("\n" + table(figures))
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", figures, meta)
    write_markdown(out / "results.md", figures, meta)
    write_chart(out / "results.png", figures)
    verdicts = [f.passed for f in figures if f.passed is not None]
    print(
        f"\n{sum(verdicts)} of {len(verdicts)} targets met; results in {out}/results.{{json,md,png}} "
        f"({meta['duration_s']} s)"
    )
    if failed:
        print("FAILED figures:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    return 0
