"""Peak memory of `augury publish` from a prediction dataset with 1, 2 and 4 writer processes: the PSS
of the publishing process and of each writer, sampled every 50 ms with psutil (sampling slows the
publish: take load times from `store_bench.py --dataset`, not from here).

    python benchmarks/publish_memory.py --rows 1000000 --parts 16 --writers 1,2,4 --redis local
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from redis_local import local_redis
from store_bench import make_batches, make_dataset


def pss(proc: psutil.Process) -> int:
    try:
        return int(proc.memory_full_info().pss)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0


def measure(folder: Path, url: str, writers: int) -> dict[str, float]:
    proc = subprocess.Popen([sys.executable, "-m", "augury.cli", "publish", str(folder), "--store", url,
                             "--writers", str(writers), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    driver = psutil.Process(proc.pid)
    tree = top = writer = 0
    while proc.poll() is None:
        try:
            mine, theirs = pss(driver), [pss(p) for p in driver.children()]
        except psutil.NoSuchProcess:
            break
        tree, top, writer = max(tree, mine + sum(theirs)), max(top, mine), max([writer, *theirs])
        time.sleep(0.05)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"augury publish failed: {err}")
    rows = json.loads(out)["version"]["row_count"]
    return {"writers": writers, "rows": rows, "peak_tree_mb": tree / 2**20, "peak_driver_mb": top / 2**20,
            "peak_writer_mb": writer / 2**20}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--parts", type=int, default=16)
    parser.add_argument("--writers", default="1,2,4")
    parser.add_argument("--redis", default="local", help="a Redis URL (its database is flushed!) or 'local'")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_dataset(make_batches(args.rows), Path(tmp) / "preds", args.parts)
        print("| writers | peak PSS, whole tree | publishing process | largest writer |")
        print("| ---: | ---: | ---: | ---: |")
        for w in (int(x) for x in args.writers.split(",")):
            with local_redis() if args.redis == "local" else _given(args.redis) as url:
                m = measure(folder, url, w)
            print(f"| {w} | {m['peak_tree_mb']:.0f} MB | {m['peak_driver_mb']:.0f} MB | "
                  f"{m['peak_writer_mb']:.0f} MB |")
    return 0


class _given:
    """A Redis URL given on the command line, flushed before each measurement."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __enter__(self) -> str:
        import redis

        redis.Redis.from_url(self.url).flushdb()
        return self.url

    def __exit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    raise SystemExit(main())
