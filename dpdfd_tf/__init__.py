"""dpdfd_tf: differentially private data-free distillation (DPDFD) for Keras/TensorFlow.

Importing the package first applies the import-order workarounds of the pinned stack (tf.keras
is tf_keras; see BUILD.md).
"""

from dpdfd_tf import _compat  # noqa: F401  (must come first)
from dpdfd_tf.accounting import Release
from dpdfd_tf.accounting import calibrate_noise_multiplier
from dpdfd_tf.accounting import epsilon
from dpdfd_tf.accounting import privacy_report
from dpdfd_tf.callbacks import Checkpointing
from dpdfd_tf.callbacks import PrivacyProgress
from dpdfd_tf.callbacks import SampleGrid
from dpdfd_tf.distiller import DPDFD
from dpdfd_tf.distiller import GeneratorLossWeights
from dpdfd_tf.distiller import PrivacyBudget
from dpdfd_tf.errors import BudgetExhaustedError
from dpdfd_tf.errors import DpdfdError
from dpdfd_tf.mechanism import normalize_rows
from dpdfd_tf.mechanism import privatize_rows

__version__ = "0.1.0"
