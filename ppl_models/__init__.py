"""ppl-models: classic factorization assumptions of generative models as Pyro programs.

Each model is a `PyroModule` whose `forward(x=None, num_samples=None)` is the generative
program; `inference.fit` fits any of them by MLE, MAP, exact conjugate posterior, SVI or NUTS.
"""

from ppl_models import datasets, moved
from ppl_models.models.autoregressive import AutoRegressive
from ppl_models.models.base import Model
from ppl_models.models.full_joint import FullJoint
from ppl_models.models.independent import Independent
from ppl_models.models.linear_gaussian import LinearGaussian
from ppl_models.models.markov import Markov
from ppl_models.models.nade import NADE
from ppl_models.programs.program import Program, as_program

# The built-in models by name: the only classes `inference.load` constructs from a file.
MODELS = {
    cls.__name__: cls
    for cls in (AutoRegressive, FullJoint, Independent, LinearGaussian, Markov, NADE)
}

__all__ = [
    "MODELS",
    "AutoRegressive",
    "FullJoint",
    "Independent",
    "LinearGaussian",
    "Markov",
    "Model",
    "NADE",
    "Program",
    "as_program",
    "datasets",
]
__version__ = "0.1.0"

moved.install()
