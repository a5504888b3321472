"""``python -m cmtp.pipelines ...``: the ``cmtp`` command line as a module, for
``torchrun --nproc_per_node=N -m cmtp.pipelines train ...`` (the trainer itself never imports the CLI)."""

from .cli import main

if __name__ == "__main__":
    main()
