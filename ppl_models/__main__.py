"""`python -m ppl_models ...` (and `torchrun ... -m ppl_models ...`): the command line."""

from ppl_models.app.cli import main

main()
