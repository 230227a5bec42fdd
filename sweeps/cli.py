# SPDX-License-Identifier: Apache-2.0
"""``haloae sweep SPEC.yaml``: validate, dry-run, run or resume a sweep (loaded lazily by haloae.cli);
a definition with a ``protocol`` runs its screen and confirm stages (``sweeps.protocol``)."""

from __future__ import annotations

import pickle
import shlex
import sys

import click


@click.command()
@click.argument("spec_path", metavar="SPEC.yaml", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Validate everything, list the trials and the estimated cost; start no Ray.")
@click.option("--resume", is_flag=True, help="Continue an interrupted sweep: finished trials are kept, running ones resume from checkpoints.")
@click.option("--address", default=None, help="Ray cluster: local (default), auto, or HOST:PORT / ray://HOST:10001.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a field of the definition, e.g. storage=/data/sweeps.")
def sweep(spec_path: str, dry_run: bool, resume: bool, address: str | None, overrides: tuple[str, ...]) -> None:
    """Run the sweep defined in SPEC.yaml with Ray Tune, recorded in MLflow."""
    from sweeps.loading import load_spec

    spec = load_spec(spec_path, list(overrides))
    if dry_run:
        from sweeps.cost import estimate, format_trials
        from sweeps.protocol import dry_run_stages
        from sweeps.reachable import check_reachable
        from sweeps.trials import check_resources, validate_trials

        stages = dry_run_stages(spec)
        for heading, stage in stages:
            click.echo("\n".join(filter(None, [heading, format_trials(stage), str(estimate(stage))])))
        for _, stage in stages:  # after the estimates: a paper sweep's GPU-hours print even where its data is absent
            validate_trials(stage)
        warning = check_resources(spec, address)
        check_reachable(spec.tracking_uri(), spec.where())
        if warning:
            click.echo(warning, err=True)
        click.echo("dry run: every trial's configuration and the data are valid; Ray was not started; nothing was written")
        return
    from sweeps.protocol import run_protocol
    from sweeps.runner import loopback_ray, run_sweep
    from sweeps.signals import SweepInterrupted

    loopback_ray(address)
    try:
        run = run_sweep if spec.protocol is None else run_protocol
        outcome = run(spec, resume=resume, address=address)
    except SweepInterrupted as exc:
        click.echo(
            f"sweep {spec.name}: {exc}; its trials were stopped and their MLflow runs ended KILLED; "
            f"continue it with: haloae sweep {shlex.join([spec_path, *(f'--set={o}' for o in overrides)])} --resume",
            err=True,
        )
        sys.exit(exc.exit_code)
    except (EOFError, pickle.UnpicklingError) as exc:  # click prints a bare "Aborted!" for an EOFError, as for Ctrl-C
        # a saved state cut short (Tune's files, an empty one included, when a kill came mid-write)
        click.echo(f"sweep {spec.name}: a file ended early, read at {_origin(exc)}: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
    click.echo(outcome.summary())
    if outcome.failed:
        sys.exit(1)


def _origin(exc: BaseException) -> str:
    """``file:line (function)`` of the innermost frame an exception came from."""
    import traceback

    frame = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{frame.filename}:{frame.lineno} ({frame.name})"
