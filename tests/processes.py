"""A local Bytewax cluster for tests: one dataflow in N processes on 127.0.0.1, as a user starts it."""

from __future__ import annotations

import subprocess
import sys

from dataflows.bench.scaling import free_ports


def run_processes(flow: str, env: dict[str, str], n: int = 2, timeout: float = 120) -> list[str]:
    """Run ``python -m bytewax.run FLOW -i K -a ADDRESSES`` in ``n`` processes; returns their stderr.

    Fails the test (with the end of every process's stderr) unless all exit 0.
    """
    addresses = ";".join(f"127.0.0.1:{p}" for p in free_ports(n))  # distinct ports, from one call
    procs = [subprocess.Popen([sys.executable, "-m", "bytewax.run", flow, "-i", str(i), "-a", addresses], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for i in range(n)]
    try:
        logs = [p.communicate(timeout=timeout)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0] * n, "\n".join(e[-2000:] for e in logs)
    return logs
