"""One module per ``flagedge`` command (serve, validate, push, diff, export, history,
rollback, flag, rollout, envs, keys, propose, requests, approve, reject, cancel), listed by ``proxy.cli``;
``_common.py`` holds the Redis arguments, the client, the exit codes and the error handling
they share; ``_review.py`` what the change-request commands print.

Each module exposes ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``, and
imports what ``run`` needs inside ``run``, so ``flagedge --help`` stays fast.

Imports (DESIGN §1): "``commands`` -> ``server``, ``release``, ``storage``, ``evaluation``,
``insights``, ``keys``, ``model``, ``config``" (only ``serve.py`` imports ``server``);
"imports inside functions only in ``commands/`` (fast ``--help``) and for optional extras."
"""
