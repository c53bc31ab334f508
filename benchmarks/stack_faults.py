"""Fault bounds of the production stack: a Celery worker killed mid-run, and Ctrl-C of ``serve``.

1. **Worker loss** (``--workers 1`` and ``2``, default timeouts: request 600 s, so the broker's
   visibility timeout is 755 s). Six requests of 400 tokens (simulated Ollama, profile
   ``seed``, time scale 0.02) on three replicas; once one is inside an Ollama (the servers'
   own count) one worker gets SIGKILL. Recorded (clock seconds, from the kill): when the
   stack's supervisor handed the dead worker's tasks back to the queue, and when the last
   request finished; every request must be a row, and redelivered ones are counted. Without
   the supervisor those tasks would return after the 755 s visibility timeout.
2. **Shutdown**: ``parallel-kit serve --mode production --shutdown-timeout-s 3`` with a client
   waiting on a request that cannot finish in time; SIGINT. Recorded: how long the waiting
   client took to get its answer (status code) and the process to exit (exit status).

Usage: ``.venv/bin/python benchmarks/stack_faults.py`` (about two minutes). Writes
``benchmarks/results/stack_faults.json``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PYTHON, ROOT, write_result


async def worker_loss(workers: int) -> dict[str, Any]:
    from parallel_kit.modes.base import ModeContext, ServerOptions
    from parallel_kit.modes.stack_options import StackOptions
    from parallel_kit.production.stack import open_stack
    from parallel_kit.production.tasks import TaskClient
    from parallel_kit.records import RequestSpec
    from parallel_kit.servers.backend import sim_info

    ctx = ModeContext([], backend="sim", time_scale=0.02, gpus=3,
                      servers=ServerOptions(launch="sim", profile="seed"),
                      stack=StackOptions(workers=workers))
    async with open_stack(ctx) as stack:
        sims = [r["url"] for r in stack.app.replicas]
        client = TaskClient(stack.redis_url, stack.app.name, 0.02, time.time())
        specs = [RequestSpec(f"p{i}", num_predict=400, request_id=f"r{i}") for i in range(6)]
        ids = [client.submit(s) for s in specs]
        while sum([((await sim_info(u)) or {}).get("active", 0) for u in sims]) < 1:
            await asyncio.sleep(0.005)
        victim = stack.workers[0]
        killed = time.time()
        victim.kill()
        done = await client.wait(ids, timeout_s=900)
        finished = time.time()
        client.close()
        [event] = stack.supervisor.events
        statuses = [done[i]["status"] for i in ids]
        redelivered = sum(1 for i in ids
                          if (done[i]["result"] or {}).get("hops", {}).get("deliveries", 1) > 1)
    return {"workers": workers, "rows": len(done), "statuses": statuses,
            "tasks_handed_back": len(event.tasks_back), "redelivered": redelivered,
            "exit_code": event.exit_code,
            "handed_back_after_s": round(event.at - killed, 3),
            "all_finished_after_s": round(finished - killed, 3),
            "visibility_timeout_s": 755.0}


def shutdown() -> dict[str, Any]:
    import httpx

    from parallel_kit.servers.launcher import free_port

    port = free_port()
    proc = subprocess.Popen([PYTHON, "-m", "parallel_kit", "serve", "--mode", "production",
                             "--port", str(port), "--time-scale", "0.02",
                             "--shutdown-timeout-s", "3", "--max-num-predict", "131072"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    answer: dict[str, Any] = {}

    def wait() -> None:
        resp = httpx.post(f"{base}/inference", json={"prompt": "long",
                                                     "options": {"num_predict": 131072}},
                          timeout=120)
        answer.update(status=resp.status_code, at=time.time())

    waiter = threading.Thread(target=wait)
    waiter.start()
    while httpx.get(f"{base}/stats", timeout=5).json()["unfinished"] < 1:
        time.sleep(0.02)
    sent = time.time()
    proc.send_signal(signal.SIGINT)
    code = proc.wait(120)
    exited = time.time()
    waiter.join(60)
    return {"shutdown_timeout_s": 3.0, "client_status": answer.get("status"),
            "client_answered_after_s": round(answer["at"] - sent, 3) if answer else None,
            "exit_status": code, "exited_after_s": round(exited - sent, 3)}


def _part(name: str) -> Any:
    """One measurement in a process of its own (a stack per process, as a user runs it)."""
    proc = subprocess.run([PYTHON, __file__, "--part", name], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode:
        raise SystemExit(f"{name} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--part":
        part = sys.argv[2]
        out = (shutdown() if part == "shutdown"
               else asyncio.run(worker_loss(int(part.removeprefix("loss")))))
        print(json.dumps(out))
        return
    result = {"worker_loss": [_part("loss1"), _part("loss2")], "shutdown": _part("shutdown")}
    print(json.dumps(result, indent=2))
    print(write_result("stack_faults", result))


if __name__ == "__main__":
    main()
