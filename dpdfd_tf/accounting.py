"""Privacy accounting: what was released -> dp_accounting DpEvent -> (epsilon, delta).

Every path goes through dp_accounting's ``RdpAccountant``, the accountant tensorflow-privacy
itself uses. The units of privacy (docs/privacy.md):

``teacher`` (default; sound for any teacher)
  Neighbouring datasets differ in one record (replace-one); the teacher may change arbitrarily,
  so each normalized row moves by up to 2C and all B rows move at once: the per-step release is a
  Gaussian mechanism with L2 sensitivity 2C*sqrt(B) and per-entry noise sigma*C, i.e. noise
  multiplier z = sigma / (2*sqrt(B)). No subsampling amplification (the teacher summarizes all of
  the private data at every step).
``teacher_ensemble``
  M teachers trained on disjoint shards, their normalized rows averaged before noise: one record
  changes one teacher, so the sensitivity is 2C*sqrt(B)/M and z = sigma*M / (2*sqrt(B)).
``dp_sgd``
  DP-SGD on the real private data (baselines, DP teachers): Poisson sampling with q = B/N,
  add-or-remove-one neighbouring, z = sigma.

sigma = 0 always means "not private": epsilon is infinite and never printed as a finite number.
"""

import dataclasses
import importlib.metadata
import math
from typing import Optional

import dp_accounting
from dp_accounting.rdp import rdp_privacy_accountant

UNITS = ("teacher", "teacher_ensemble", "dp_sgd")

_NEIGHBOURING = {
    "teacher": dp_accounting.NeighboringRelation.REPLACE_ONE,
    "teacher_ensemble": dp_accounting.NeighboringRelation.REPLACE_ONE,
    "dp_sgd": dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
}

_NEIGHBOURING_TEXT = {
    dp_accounting.NeighboringRelation.REPLACE_ONE:
        "replace-one: neighbouring private datasets differ in one record replaced by another",
    dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE:
        "add-or-remove-one: neighbouring private datasets differ by one record added or removed",
}


@dataclasses.dataclass(frozen=True)
class Release:
  """Describes what a run releases, in enough detail to account it.

  Attributes:
    noise_multiplier: sigma, noise std in units of the clip norm C (entry-wise for the
      teacher units, on the clipped sum for dp_sgd). 0 means not private.
    batch_size: B, rows released per step (teacher units) or expected batch (dp_sgd).
    steps: number of private releases (student steps).
    unit: one of UNITS.
    num_teachers: M for the teacher_ensemble unit.
    dataset_size: N, number of private records (dp_sgd only: sampling rate q = B/N).
  """
  noise_multiplier: float
  batch_size: int
  steps: int
  unit: str = "teacher"
  num_teachers: int = 1
  dataset_size: Optional[int] = None

  def __post_init__(self):
    if self.unit not in UNITS:
      raise ValueError(f"unknown privacy unit {self.unit!r}; expected one of {UNITS}")
    if not self.noise_multiplier >= 0 or math.isinf(self.noise_multiplier):
      raise ValueError(f"noise multiplier must be finite and >= 0, got {self.noise_multiplier}")
    if self.batch_size < 1:
      raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
    if self.steps < 0:
      raise ValueError(f"steps must be >= 0, got {self.steps}")
    if self.num_teachers < 1:
      raise ValueError(f"number of teachers must be >= 1, got {self.num_teachers}")
    if self.unit == "dp_sgd":
      if not self.dataset_size or self.dataset_size < self.batch_size:
        raise ValueError("the dp_sgd unit needs dataset_size >= batch_size")

  @property
  def private(self) -> bool:
    return self.noise_multiplier > 0

  @property
  def effective_noise_multiplier(self) -> float:
    """z: noise std divided by the L2 sensitivity of one release."""
    return effective_noise_multiplier(self.noise_multiplier, self.batch_size, self.unit,
                                      self.num_teachers)

  def with_steps(self, steps: int) -> "Release":
    return dataclasses.replace(self, steps=steps)


def effective_noise_multiplier(noise_multiplier, batch_size, unit="teacher", num_teachers=1):
  """z for one release of the given unit (see module docstring)."""
  if unit == "teacher":
    return noise_multiplier / (2.0 * math.sqrt(batch_size))
  if unit == "teacher_ensemble":
    return noise_multiplier * num_teachers / (2.0 * math.sqrt(batch_size))
  if unit == "dp_sgd":
    return noise_multiplier
  raise ValueError(f"unknown privacy unit {unit!r}")


def dp_event(release: Release) -> dp_accounting.DpEvent:
  """The dp_accounting event describing ``release``."""
  if not release.private:
    return dp_accounting.NonPrivateDpEvent()
  if release.steps == 0:
    return dp_accounting.NoOpDpEvent()
  gaussian = dp_accounting.GaussianDpEvent(release.effective_noise_multiplier)
  if release.unit == "dp_sgd":
    gaussian = dp_accounting.PoissonSampledDpEvent(
        release.batch_size / release.dataset_size, gaussian)
  return dp_accounting.SelfComposedDpEvent(gaussian, release.steps)


def _check_delta(delta):
  if not 0 < delta < 1:
    raise ValueError(f"delta must be in (0, 1), got {delta}")


def epsilon(release: Release, delta: float) -> float:
  """Epsilon spent by ``release`` at ``delta``; ``math.inf`` when it is not private."""
  _check_delta(delta)
  if not release.private:
    return math.inf
  accountant = rdp_privacy_accountant.RdpAccountant(
      neighboring_relation=_NEIGHBOURING[release.unit])
  accountant.compose(dp_event(release))
  return float(accountant.get_epsilon(delta))


def calibrate_noise_multiplier(target_epsilon: float, delta: float, release: Release,
                               relative_tolerance: float = 1e-3) -> float:
  """Smallest sigma (within ``relative_tolerance``) whose accounted epsilon is <= target.

  ``release`` supplies everything but the noise multiplier (its own sigma is ignored). The
  returned sigma always meets the target: bisection keeps the upper end, which satisfies it.
  """
  _check_delta(delta)
  if not target_epsilon > 0 or math.isinf(target_epsilon):
    raise ValueError(f"target epsilon must be a finite number > 0, got {target_epsilon}")
  if release.steps == 0:
    return 0.0

  def spent(sigma):
    return epsilon(dataclasses.replace(release, noise_multiplier=sigma), delta)

  low, high = 1e-3, 1.0
  while spent(high) > target_epsilon:
    low, high = high, high * 2.0
    if high > 1e9:
      raise ValueError(f"no noise multiplier reaches epsilon {target_epsilon}")
  if spent(low) <= target_epsilon:
    return low
  while (high - low) > relative_tolerance * high:
    middle = 0.5 * (low + high)
    if spent(middle) <= target_epsilon:
      high = middle
    else:
      low = middle
  return high


def neighbouring_relation(unit: str) -> str:
  return _NEIGHBOURING_TEXT[_NEIGHBOURING[unit]]


def accountant_versions() -> dict:
  versions = {}
  for package in ("dp-accounting", "tensorflow-privacy", "tensorflow"):
    try:
      versions[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      versions[package] = "not installed"
  return versions


def format_epsilon(value: float) -> str:
  """Four significant digits, rounded up: a printed epsilon is never below the spent one."""
  if math.isinf(value):
    return "inf"
  if value <= 0:
    return "0"
  scale = 10.0**(math.floor(math.log10(value)) - 3)
  return f"{math.ceil(value / scale - 1e-9) * scale:.4g}"


MECHANISM_TEXT = (
    "per-sample gradients of the distillation loss w.r.t. the student logits, each row "
    "normalized to L2 norm <= C, plus N(0, (sigma*C)^2) noise per entry (Gaussian mechanism)")


def privacy_report(release: Release, delta: float, clip_norm: float,
                   not_private_reason=None, **details) -> dict:
  """The privacy report: what was released, how it is accounted, and the (epsilon, delta) spent.

  ``epsilon`` is the string "inf" when the run is not private (JSON has no infinity).
  """
  spent = epsilon(release, delta)
  private = release.private and not_private_reason is None and not math.isinf(spent)
  report = {
      "private": private,
      "epsilon": spent if private else "inf",
      "delta": delta,
      "unit": release.unit,
      "neighbouring_relation": neighbouring_relation(release.unit),
      "mechanism": MECHANISM_TEXT,
      "clip_norm": clip_norm,
      "noise_multiplier": release.noise_multiplier,
      "effective_noise_multiplier": (release.effective_noise_multiplier if release.private
                                     else 0.0),
      "batch_size": release.batch_size,
      "private_steps": release.steps,
      "teacher_answers": release.batch_size * release.steps,
      "accountant": "dp_accounting.rdp.RdpAccountant (as used by tensorflow-privacy)",
      "versions": accountant_versions(),
  }
  if release.unit == "teacher_ensemble":
    report["num_teachers"] = release.num_teachers
  if not private:
    report["not_private_reason"] = not_private_reason or "noise multiplier is 0"
  report.update(details)
  return report


def describe(report: dict) -> str:
  """A few plain lines for the terminal."""
  if not report["private"]:
    return (f"NOT PRIVATE: epsilon = inf ({report['not_private_reason']}). "
            f"{report['private_steps']} steps of batch {report['batch_size']}.")
  text = (f"({format_epsilon(report['epsilon'])}, {report['delta']:g})-DP, unit: {report['unit']} "
          f"({report['neighbouring_relation']}); sigma = {report['noise_multiplier']:.4g}, "
          f"C = {report['clip_norm']:g}, z = {report['effective_noise_multiplier']:.4g}, "
          f"B = {report['batch_size']}, steps = {report['private_steps']}")
  if "num_teachers" in report:
    text += f", M = {report['num_teachers']}"
  return text
