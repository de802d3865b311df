"""`python -m decembert_cli ...` (what `torchrun -m decembert_cli pretrain ...` runs)."""

from decembert_cli.app import main

main()
