"""First-party downstream tasks of decembert, installed as `decembert_tasks`.

They register through the `decembert.tasks` entry points exactly as a third-party package would;
nothing in `decembert_cli` imports them by name.
"""
