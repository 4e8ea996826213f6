"""Shared by the benchmark scripts: running a command, and how busy the machine was meanwhile.

``run`` runs a command line as typed in BENCHMARKS.md. ``OtherLoad`` reads the machine's busy CPU time (/proc/stat) and this process's own CPU time,
children included, at the start and at the end: the difference is what other processes used,
reported as an average number of busy cores. Where /proc/stat is missing it reports None.
"""

import os
import resource
import subprocess
import sys
import time


def run(command, echo=True):
  """Runs a command (``python -m ...`` as typed, with this interpreter); returns its stdout.

  Raises RuntimeError with the end of its stderr when it fails.
  """
  if echo:
    print("+", " ".join(command), flush=True)
  full = [sys.executable] + command[1:] if command[0] == "python" else command
  result = subprocess.run(full, capture_output=True, text=True, check=False)
  if result.returncode != 0:
    raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
  return result.stdout


def _busy_seconds():
  """CPU seconds spent busy on all cores since boot (user, nice, system, irq, softirq, steal)."""
  try:
    with open("/proc/stat") as f:
      values = [int(v) for v in f.readline().split()[1:9]]
  except (OSError, ValueError):
    return None
  idle = values[3] + values[4]  # idle + iowait
  return (sum(values) - idle) / os.sysconf("SC_CLK_TCK")


def _own_seconds():
  own = 0.0
  for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
    usage = resource.getrusage(who)
    own += usage.ru_utime + usage.ru_stime
  return own


class OtherLoad:
  """Start it before a measurement; ``cores()`` after it: cores busy with other processes."""

  def __init__(self):
    self.wall, self.busy, self.own = time.time(), _busy_seconds(), _own_seconds()

  def cores(self):
    busy, wall = _busy_seconds(), time.time() - self.wall
    if busy is None or self.busy is None or wall <= 0:
      return None
    other = (busy - self.busy) - (_own_seconds() - self.own)
    return max(0.0, other / wall)


def describe(cores, cpus):
  """A sentence for BENCHMARKS.md, or '' when unknown."""
  if cores is None:
    return ""
  text = f"Other processes kept {cores:.1f} of the {cpus} cores busy on average meanwhile"
  if cpus and cores >= 0.25 * cpus:
    text += ": the machine was loaded, so absolute times are inflated (side-by-side ratios much less)"
  return text + "."
