"""Console-script wrappers for the tools whose ``main`` returns a result rather than an exit status (the script
would otherwise exit with that result printed as an error)."""

from __future__ import annotations


def train_cls() -> int:
    from tools.train_cls import main

    main()
    return 0


def eval_cls() -> int:
    from tools.eval_cls import main

    main()
    return 0


def convert_weights() -> int:
    from tools.convert_weights import run  # every failure as one error: line

    return run()
