"""The accountant against closed forms, dp_accounting called directly, and calibration."""

import dataclasses
import math

import dp_accounting
from dp_accounting.rdp import rdp_privacy_accountant
import numpy as np
import pytest
from scipy import stats

from dpdfd_tf import accounting


def closed_form_gaussian_epsilon(z, steps, delta, orders):
  """RDP of T-fold Gaussian with noise multiplier z: eps_RDP(a) = T a / (2 z^2) (Mironov 2017),
  converted with eps = r + log1p(-1/a) - (log delta + log a) / (a - 1) (Canonne et al. 2020,
  Prop. 12), minimized over the orders."""
  best = math.inf
  for order in orders:
    rdp = steps * order / (2 * z * z)
    best = min(best, rdp + math.log1p(-1 / order) - (math.log(delta) + math.log(order)) /
               (order - 1))
  return max(best, 0.0)


def exact_gaussian_delta(epsilon, mu):
  """Tight delta(epsilon) of a Gaussian mechanism with sensitivity/std ratio mu (Balle & Wang
  2018): Phi(mu/2 - eps/mu) - e^eps Phi(-mu/2 - eps/mu)."""
  return stats.norm.cdf(mu / 2 - epsilon / mu) - math.exp(epsilon) * stats.norm.cdf(
      -mu / 2 - epsilon / mu)


@pytest.mark.parametrize("sigma,batch,steps", [(758.0, 256, 2000), (53.6, 64, 40),
                                                (10.7, 256, 2000), (200.0, 16, 1)])
def test_teacher_unit_matches_closed_form_rdp(sigma, batch, steps):
  z = sigma / (2 * math.sqrt(batch))  # sensitivity 2C sqrt(B), noise sigma C
  got = accounting.epsilon(accounting.Release(sigma, batch, steps), 1e-5)
  expected = closed_form_gaussian_epsilon(z, steps, 1e-5, rdp_privacy_accountant.DEFAULT_RDP_ORDERS)
  assert got == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("sigma,batch,steps", [(758.0, 256, 2000), (20.0, 64, 100)])
def test_teacher_unit_never_undercounts_the_tight_gaussian_bound(sigma, batch, steps):
  # T Gaussian releases compose to one Gaussian with mu = sqrt(T) / z; the RDP epsilon must be
  # at least the exact one, i.e. the exact delta at the reported epsilon is <= the target delta.
  delta = 1e-5
  z = sigma / (2 * math.sqrt(batch))
  got = accounting.epsilon(accounting.Release(sigma, batch, steps), delta)
  assert exact_gaussian_delta(got, math.sqrt(steps) / z) <= delta
  # ... and not absurdly loose: within a factor 1.5 of the tight epsilon.
  tight_low = got / 1.5
  assert exact_gaussian_delta(tight_low, math.sqrt(steps) / z) > delta


def test_units_match_dp_accounting_called_directly():
  delta = 1e-5
  ensemble = accounting.Release(2.0, 256, 1000, unit="teacher_ensemble", num_teachers=250)
  direct = rdp_privacy_accountant.RdpAccountant(
      neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
  direct.compose(dp_accounting.SelfComposedDpEvent(
      dp_accounting.GaussianDpEvent(2.0 * 250 / (2 * 16)), 1000))
  assert accounting.epsilon(ensemble, delta) == pytest.approx(direct.get_epsilon(delta))
  # The figure quoted in the prototype notes: sigma 2, B 256, T 1000, M 250 -> epsilon 10.9.
  assert accounting.epsilon(ensemble, delta) == pytest.approx(10.88, abs=0.01)

  dpsgd = accounting.Release(1.1, 256, 1000, unit="dp_sgd", dataset_size=60000)
  direct = rdp_privacy_accountant.RdpAccountant()
  direct.compose(dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(256 / 60000, dp_accounting.GaussianDpEvent(1.1)), 1000))
  assert accounting.epsilon(dpsgd, delta) == pytest.approx(direct.get_epsilon(delta))


def test_sampled_teacher_and_dp_optimizer_units_match_dp_accounting():
  delta = 1e-5
  sampled = accounting.Release(40.0, 256, 500, unit="teacher_sampled", num_teachers=100)
  direct = rdp_privacy_accountant.RdpAccountant(
      neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
  direct.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.SampledWithoutReplacementDpEvent(
      100, 1, dp_accounting.GaussianDpEvent(40.0 / (2 * 16))), 500))
  assert accounting.epsilon(sampled, delta) == pytest.approx(direct.get_epsilon(delta))
  # Sampling one of M teachers never costs more than asking the same single teacher each step.
  single = accounting.Release(40.0, 256, 500, unit="teacher")
  assert accounting.epsilon(sampled, delta) < accounting.epsilon(single, delta)

  # dp_optimizer: the clipped sum's sensitivity is 2*C*B, so z = sigma / (2B): with sigma scaled
  # by sqrt(B) it is exactly the teacher unit's Gaussian.
  optimizer = accounting.Release(100.0 * 16, 256, 1000, unit="dp_optimizer")
  assert optimizer.effective_noise_multiplier == pytest.approx(100.0 / (2 * 16))
  assert accounting.epsilon(optimizer, delta) == pytest.approx(
      accounting.epsilon(accounting.Release(100.0, 256, 1000), delta))
  z = 1600.0 / 512
  expected = closed_form_gaussian_epsilon(z, 1000, delta, rdp_privacy_accountant.DEFAULT_RDP_ORDERS)
  assert accounting.epsilon(optimizer, delta) == pytest.approx(expected, rel=1e-9)


def test_composed_releases_match_dp_accounting_and_cost_more_than_each():
  delta = 1e-5
  student = accounting.Release(30.0, 256, 1000, unit="teacher_ensemble", num_teachers=10)
  generator = accounting.Release(30.0, 256, 1000, unit="teacher", clip_norm=2.0,
                                 name="generator image gradients")
  direct = rdp_privacy_accountant.RdpAccountant(
      neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
  for release in (student, generator):
    direct.compose(accounting.dp_event(release))
  both = accounting.epsilon([student, generator], delta)
  assert both == pytest.approx(direct.get_epsilon(delta))
  assert both > max(accounting.epsilon(student, delta), accounting.epsilon(generator, delta))
  report = accounting.privacy_report([student, generator], delta)
  assert report["epsilon"] == pytest.approx(both)
  assert [r["name"] for r in report["releases"]] == ["student rows", "generator image gradients"]
  # Different neighbouring relations are never silently mixed.
  dpsgd = accounting.Release(1.0, 256, 10, unit="dp_sgd", dataset_size=60000)
  with pytest.raises(ValueError, match="neighbouring"):
    accounting.epsilon([student, dpsgd], delta)


def test_dp_teacher_bounds_the_run_by_post_processing():
  delta = 1e-5
  teacher = accounting.Release(1.1, 256, 1170, unit="dp_sgd", dataset_size=60000)
  teacher_epsilon = accounting.epsilon(teacher, delta)
  # Distilled without noise (or with a generator that queries it freely): the teacher's epsilon.
  report = accounting.privacy_report(accounting.Release(0.0, 256, 1000), delta,
                                     teacher_training=teacher)
  assert report["private"] and report["epsilon"] == pytest.approx(teacher_epsilon)
  assert report["bound"].startswith("dp_teacher") and report["distillation_epsilon"] == "inf"
  report = accounting.privacy_report(accounting.Release(0.0, 256, 1000), delta,
                                     not_private_reason="raw teacher queries",
                                     teacher_training=teacher)
  assert report["epsilon"] == pytest.approx(teacher_epsilon)
  # With enough noise the distillation bound is the smaller one, and it is reported.
  noisy = accounting.Release(5000.0, 256, 100)
  report = accounting.privacy_report(noisy, delta, teacher_training=teacher)
  assert report["epsilon"] == pytest.approx(accounting.epsilon(noisy, delta))
  assert report["epsilon"] < teacher_epsilon
  assert report["bound"].startswith("distillation")
  assert report["teacher_training"]["epsilon"] == pytest.approx(teacher_epsilon)


UNIT_CASES = [("teacher", {}), ("teacher_ensemble", {"num_teachers": 50}),
              ("teacher_sampled", {"num_teachers": 50}), ("dp_optimizer", {}),
              ("dp_sgd", {"dataset_size": 60000})]


@pytest.mark.parametrize("unit,kwargs", UNIT_CASES)
def test_zero_noise_is_infinite_epsilon_on_every_unit(unit, kwargs):
  release = accounting.Release(0.0, 256, 1000, unit=unit, **kwargs)
  assert math.isinf(accounting.epsilon(release, 1e-5))
  report = accounting.privacy_report(release, 1e-5)
  assert report["epsilon"] == "inf" and report["private"] is False


@pytest.mark.parametrize("target", [1.0, 10.0, 100.0])
@pytest.mark.parametrize("batch,steps", [(256, 1000), (64, 40)])
def test_calibrated_sigma_meets_target_and_is_minimal(target, batch, steps):
  release = accounting.Release(0.0, batch, steps)
  sigma = accounting.calibrate_noise_multiplier(target, 1e-5, release)
  assert accounting.epsilon(accounting.Release(sigma, batch, steps), 1e-5) <= target
  assert accounting.epsilon(accounting.Release(0.99 * sigma, batch, steps), 1e-5) > target


@pytest.mark.parametrize("unit,kwargs", UNIT_CASES)
@pytest.mark.parametrize("target", [1.0, 10.0])
def test_calibration_meets_target_and_is_minimal_for_every_unit(unit, kwargs, target):
  release = accounting.Release(0.0, 256, 300, unit=unit, **kwargs)
  sigma = accounting.calibrate_noise_multiplier(target, 1e-5, release)
  spent = lambda s: accounting.epsilon(dataclasses.replace(release, noise_multiplier=s), 1e-5)
  assert spent(sigma) <= target < spent(0.99 * sigma)


def test_calibration_of_composed_releases_meets_the_joint_target():
  releases = [accounting.Release(0.0, 128, 200),
              accounting.Release(0.0, 128, 200, clip_norm=3.0, name="generator image gradients")]
  sigma = accounting.calibrate_noise_multiplier(10.0, 1e-5, releases)
  with_sigma = lambda s: [dataclasses.replace(r, noise_multiplier=s) for r in releases]
  assert accounting.epsilon(with_sigma(sigma), 1e-5) <= 10.0 < accounting.epsilon(
      with_sigma(0.99 * sigma), 1e-5)
  assert sigma > accounting.calibrate_noise_multiplier(10.0, 1e-5, releases[0])


def test_epsilon_grows_with_steps_and_batch():
  eps = lambda b, t: accounting.epsilon(accounting.Release(100.0, b, t), 1e-5)
  assert eps(256, 100) < eps(256, 1000) < eps(256, 10000)
  assert eps(64, 1000) < eps(256, 1000)  # more teacher answers per step


def test_format_epsilon_rounds_up():
  assert accounting.format_epsilon(9.99949) == "10"
  assert accounting.format_epsilon(1.23441) == "1.235"
  assert accounting.format_epsilon(math.inf) == "inf"


@pytest.mark.parametrize("kwargs", [{"noise_multiplier": -1.0}, {"batch_size": 0},
                                    {"steps": -1}, {"unit": "nope"}])
def test_release_rejects_bad_values(kwargs):
  values = dict(noise_multiplier=1.0, batch_size=8, steps=1)
  values.update(kwargs)
  with pytest.raises(ValueError):
    accounting.Release(**values)


@pytest.mark.parametrize("delta", [0.0, 1.0, -1e-5])
def test_delta_outside_unit_interval_is_rejected(delta):
  with pytest.raises(ValueError):
    accounting.epsilon(accounting.Release(1.0, 8, 1), delta)


@pytest.mark.parametrize("unit,kwargs", UNIT_CASES)
def test_a_report_describes_its_release_exactly(unit, kwargs):
  release = accounting.Release(3.0, 128, 70, unit=unit, clip_norm=0.5, **kwargs)
  again = accounting.release_from_summary(accounting.privacy_report(release, 1e-5),
                                          name=release.name)
  assert again == release
