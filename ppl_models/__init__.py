"""ppl-models: classic factorization assumptions of generative models as Pyro programs.

Each model is a `PyroModule` whose `forward(x=None, num_samples=None)` is the generative
program; `inference.fit` fits any of them by MLE, MAP, exact conjugate posterior, SVI or NUTS.
"""

from ppl_models import datasets
from ppl_models.autoregressive import AutoRegressive
from ppl_models.full_joint import FullJoint
from ppl_models.independent import Independent
from ppl_models.linear_gaussian import LinearGaussian
from ppl_models.markov import Markov
from ppl_models.nade import NADE

__all__ = ["AutoRegressive", "FullJoint", "Independent", "LinearGaussian", "Markov", "NADE",
           "datasets"]
__version__ = "0.1.0"
