# SPDX-License-Identifier: Apache-2.0
"""Sweeps: YAML sweep definitions run by Ray Tune, searched by Optuna, recorded in MLflow.

- ``loading`` reads a definition (``load_spec``, ``parse_spec``) into ``schema.SweepSpec`` (its
  sections in ``sections``, searched dimensions in ``domain``, errors in ``errors``); no Ray.
- ``trials`` the trial configs it expands to (``build_config``, ``trial_grid``) and the dry-run
  checks (``validate_trials``, ``check_resources``).
- ``space`` the definition as a Ray Tune ``param_space`` or an Optuna define-by-run space.
- ``cost``  trial counts and an estimate of the compute a sweep needs, for ``--dry-run``.
- ``protocol`` the two-stage run of a definition with a ``protocol`` section: screen, then confirm.

Nothing is imported here: ``haloae --help`` must not pay for torch, Ray or Optuna.
"""
