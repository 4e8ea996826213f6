"""Errors that command lines report as one line, with a non-zero exit and no traceback."""


class DpdfdError(Exception):
  """A problem with the user's input or environment, stated in one line."""


class BudgetExhaustedError(DpdfdError):
  """A private step would exceed the privacy budget the run was calibrated for."""


class NonFiniteLossError(DpdfdError):
  """Training produced a NaN or Inf; the last checkpoint predates it."""
