"""`python -m ppl_models ...` (and `torchrun ... -m ppl_models ...`): the command line."""

from ppl_models.cli import main

main()
