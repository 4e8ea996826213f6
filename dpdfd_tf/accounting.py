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
``teacher_sampled``
  M teachers on disjoint shards, one drawn uniformly (secretly) per step and its B normalized rows
  released with noise: a Gaussian of z = sigma / (2*sqrt(B)) on a sample of 1 teacher out of M
  drawn without replacement, with replace-one neighbouring at the teacher level (q = 1/M).
``dp_optimizer``
  The student trained with a tensorflow-privacy DP optimizer on synthetic data (microbatches of
  one sample): every per-sample weight gradient, clipped to C, may change with the teacher, so
  the clipped sum has sensitivity 2*C*B and its noise is sigma*C: z = sigma / (2*B). Synthetic
  samples are not private records: there is no sampling amplification.
``dp_sgd``
  DP-SGD on the real private data (baselines, DP teachers): Poisson sampling with q = B/N,
  add-or-remove-one neighbouring, z = sigma.

Several releases of one run (the student's rows and a private teacher-guided generator's image
gradients) are composed in one accountant. A DP-trained teacher gives a second, independent
bound: everything computed from it is post-processing of its training, so a run reports the
smaller of the two (``privacy_report``).

sigma = 0 always means "not private": epsilon is infinite and never printed as a finite number.
"""

import dataclasses
import importlib.metadata
import math
from typing import Optional

import dp_accounting
from dp_accounting.rdp import rdp_privacy_accountant

UNITS = ("teacher", "teacher_ensemble", "teacher_sampled", "dp_optimizer", "dp_sgd")
# Units in which the M teachers of an ensemble enter the accounting.
ENSEMBLE_UNITS = ("teacher_ensemble", "teacher_sampled")

_NEIGHBOURING = {
    "teacher": dp_accounting.NeighboringRelation.REPLACE_ONE,
    "teacher_ensemble": dp_accounting.NeighboringRelation.REPLACE_ONE,
    "teacher_sampled": dp_accounting.NeighboringRelation.REPLACE_ONE,
    "dp_optimizer": dp_accounting.NeighboringRelation.REPLACE_ONE,
    "dp_sgd": dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
}

_MECHANISM_TEXT = {
    "teacher": "per-sample gradients of the distillation loss w.r.t. the student logits, each "
               "row normalized to L2 norm <= C, plus N(0, (sigma*C)^2) noise per entry",
    "teacher_ensemble": "per-sample gradients of the distillation loss w.r.t. the student "
                        "logits for each of M teachers, each row normalized to L2 norm <= C, "
                        "averaged over the teachers, plus N(0, (sigma*C)^2) noise per entry",
    "teacher_sampled": "one of M teachers drawn uniformly at random per step; per-sample "
                       "gradients of the distillation loss w.r.t. the student logits for it, "
                       "each row normalized to L2 norm <= C, plus N(0, (sigma*C)^2) noise",
    "dp_optimizer": "tensorflow-privacy DP optimizer on the student: per-sample weight "
                    "gradients of the distillation loss clipped to L2 norm <= C, summed, plus "
                    "N(0, (sigma*C)^2) noise per coordinate",
    "dp_sgd": "DP-SGD on the private records: Poisson-sampled batches, per-example gradients "
              "clipped to L2 norm <= C, summed, plus N(0, (sigma*C)^2) noise per coordinate",
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
    num_teachers: M for the ensemble units.
    dataset_size: N, number of private records (dp_sgd only: sampling rate q = B/N).
    clip_norm: C, for the report (epsilon does not depend on it).
    name: what is released, for the report (e.g. "student rows").
  """
  noise_multiplier: float
  batch_size: int
  steps: int
  unit: str = "teacher"
  num_teachers: int = 1
  dataset_size: Optional[int] = None
  clip_norm: float = 1.0
  name: str = "student rows"

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
    if self.unit == "teacher_sampled" and self.num_teachers < 2:
      raise ValueError("the teacher_sampled unit needs num_teachers >= 2")
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
  if unit in ("teacher", "teacher_sampled"):
    return noise_multiplier / (2.0 * math.sqrt(batch_size))
  if unit == "teacher_ensemble":
    return noise_multiplier * num_teachers / (2.0 * math.sqrt(batch_size))
  if unit == "dp_optimizer":
    return noise_multiplier / (2.0 * batch_size)
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
  elif release.unit == "teacher_sampled":
    gaussian = dp_accounting.SampledWithoutReplacementDpEvent(
        source_dataset_size=release.num_teachers, sample_size=1, event=gaussian)
  return dp_accounting.SelfComposedDpEvent(gaussian, release.steps)


def _as_releases(releases):
  releases = (releases,) if isinstance(releases, Release) else tuple(releases)
  if not releases:
    raise ValueError("nothing to account: no releases")
  relations = {_NEIGHBOURING[release.unit] for release in releases}
  if len(relations) > 1:
    raise ValueError("cannot compose releases with different neighbouring relations: "
                     f"{sorted(release.unit for release in releases)}")
  return releases


def _check_delta(delta):
  if not 0 < delta < 1:
    raise ValueError(f"delta must be in (0, 1), got {delta}")


def epsilon(releases, delta: float) -> float:
  """Epsilon spent at ``delta`` by a Release or by the composition of several.

  ``math.inf`` when any of them is not private (sigma = 0 releases raw teacher information).
  """
  _check_delta(delta)
  releases = _as_releases(releases)
  if not all(release.private for release in releases):
    return math.inf
  accountant = rdp_privacy_accountant.RdpAccountant(
      neighboring_relation=_NEIGHBOURING[releases[0].unit])
  for release in releases:
    accountant.compose(dp_event(release))
  return float(accountant.get_epsilon(delta))


def calibrate_noise_multiplier(target_epsilon: float, delta: float, releases,
                               relative_tolerance: float = 1e-3) -> float:
  """Smallest sigma (within ``relative_tolerance``) whose accounted epsilon is <= target.

  ``releases`` (a Release or several, composed) supply everything but the noise multiplier: the
  same sigma is tried for all of them. The returned sigma always meets the target: bisection
  keeps the upper end, which satisfies it.
  """
  _check_delta(delta)
  releases = _as_releases(releases)
  if not target_epsilon > 0 or math.isinf(target_epsilon):
    raise ValueError(f"target epsilon must be a finite number > 0, got {target_epsilon}")
  if all(release.steps == 0 for release in releases):
    return 0.0

  def spent(sigma):
    return epsilon([dataclasses.replace(r, noise_multiplier=sigma) for r in releases], delta)

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


def release_summary(release: Release) -> dict:
  """One release as report fields."""
  summary = {
      "name": release.name,
      "unit": release.unit,
      "mechanism": _MECHANISM_TEXT[release.unit],
      "clip_norm": release.clip_norm,
      "noise_multiplier": release.noise_multiplier,
      "effective_noise_multiplier": (release.effective_noise_multiplier if release.private
                                     else 0.0),
      "batch_size": release.batch_size,
      "private_steps": release.steps,
  }
  if release.unit in ENSEMBLE_UNITS:
    summary["num_teachers"] = release.num_teachers
  if release.unit == "dp_sgd":
    summary["dataset_size"] = release.dataset_size
    summary["sampling"] = f"Poisson, q = B/N = {release.batch_size / release.dataset_size:.6g}"
  return summary


def release_from_summary(summary: dict, name=None) -> Release:
  """The Release a ``release_summary`` (or a privacy report) describes; ValueError, KeyError or
  TypeError when it is incomplete."""
  return Release(
      float(summary["noise_multiplier"]), int(summary["batch_size"]),
      int(summary["private_steps"]), unit=summary["unit"],
      num_teachers=int(summary.get("num_teachers", 1)),
      dataset_size=(int(summary["dataset_size"]) if summary.get("dataset_size") is not None
                    else None),
      clip_norm=float(summary["clip_norm"]), name=name or summary.get("name", "student rows"))


def privacy_report(releases, delta: float, not_private_reason=None,
                   teacher_training: Optional[Release] = None, **details) -> dict:
  """The privacy report: what was released, how it is accounted, and the (epsilon, delta) spent.

  Args:
    releases: the run's Release, or several composed (the first one is the headline: the
      student's). Their epsilon is the distillation bound.
    delta: the delta epsilon is reported at.
    not_private_reason: set when some release bypasses the mechanism (e.g. a generator that
      queries the teacher without noise): the distillation bound is then infinite.
    teacher_training: the dp_sgd Release that trained the teacher, if it was trained with DP.
      Everything computed from such a teacher is post-processing of its training, so its epsilon
      bounds the run too; the report gives the smaller bound and names it.
    **details: extra fields (status, plan, file lists).

  ``epsilon`` is the string "inf" when the run is not private (JSON has no infinity).
  """
  releases = _as_releases(releases)
  headline = releases[0]
  distillation = epsilon(releases, delta) if not_private_reason is None else math.inf
  teacher = epsilon(teacher_training, delta) if teacher_training is not None else math.inf
  spent = min(distillation, teacher)
  private = not math.isinf(spent)
  bound_unit = teacher_training.unit if private and teacher < distillation else headline.unit
  report = {
      "private": private,
      "epsilon": spent if private else "inf",
      "delta": delta,
      "bound": ("dp_teacher: the teacher was trained with DP and everything here is computed "
                "from it (post-processing)" if private and teacher < distillation
                else "distillation: the releases below, composed"),
      "neighbouring_relation": neighbouring_relation(bound_unit),
      **release_summary(headline),
      "accountant": "dp_accounting.rdp.RdpAccountant (as used by tensorflow-privacy)",
      "versions": accountant_versions(),
  }
  del report["name"]
  if headline.unit != "dp_sgd":
    report["teacher_answers"] = headline.batch_size * headline.steps
  if len(releases) > 1:
    report["releases"] = [release_summary(release) for release in releases]
    report["distillation_epsilon"] = distillation if not math.isinf(distillation) else "inf"
  if teacher_training is not None:
    report["teacher_training"] = {
        **release_summary(teacher_training), "epsilon": teacher,
        "neighbouring_relation": neighbouring_relation(teacher_training.unit)}
    report["distillation_epsilon"] = distillation if not math.isinf(distillation) else "inf"
  if not private:
    report["not_private_reason"] = not_private_reason or "noise multiplier is 0"
  report.update(details)
  return report


def describe(report: dict) -> str:
  """A few plain lines for the terminal."""
  if not report["private"]:
    return (f"NOT PRIVATE: epsilon = inf ({report['not_private_reason']}). "
            f"{report['private_steps']} steps of batch {report['batch_size']}.")
  if report["bound"].startswith("dp_teacher"):
    training = report["teacher_training"]
    return (f"({format_epsilon(report['epsilon'])}, {report['delta']:g})-DP by post-processing "
            f"of the DP teacher ({report['neighbouring_relation']}; DP-SGD sigma = "
            f"{training['noise_multiplier']:.4g}, {training['private_steps']} steps, "
            f"{training['sampling']}); the distillation alone would give epsilon = "
            f"{format_epsilon(_as_float(report['distillation_epsilon']))}")
  text = (f"({format_epsilon(report['epsilon'])}, {report['delta']:g})-DP, unit: {report['unit']} "
          f"({report['neighbouring_relation']}); sigma = {report['noise_multiplier']:.4g}, "
          f"C = {report['clip_norm']:g}, z = {report['effective_noise_multiplier']:.4g}, "
          f"B = {report['batch_size']}, steps = {report['private_steps']}")
  if "num_teachers" in report:
    text += f", M = {report['num_teachers']}"
  for release in report.get("releases", [])[1:]:
    text += (f"; composed with {release['name']} (sigma = {release['noise_multiplier']:.4g}, "
             f"C = {release['clip_norm']:g}, steps = {release['private_steps']})")
  return text


def _as_float(value):
  return math.inf if value == "inf" else float(value)
