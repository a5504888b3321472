"""``python -m trainer train ...``: the training command, for ``torchrun --nproc_per_node=N -m trainer train``."""

from pipelines.cli import main

if __name__ == "__main__":
    main()
