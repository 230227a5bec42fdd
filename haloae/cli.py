# SPDX-License-Identifier: Apache-2.0
"""The ``haloae`` command. Each subcommand imports what it needs inside its body, so ``--help`` is fast.

Bad input is a one-line error on stderr and exit code 2, before any expensive work starts.
"""

from __future__ import annotations

import json
import sys

import click


class _OneLineErrors(click.Group):
    """Turn configuration errors raised inside any subcommand into click usage errors (exit 2)."""

    def invoke(self, ctx: click.Context):
        from haloae.backbone import BackboneWeightsError
        from haloae.config import ConfigError

        try:
            return super().invoke(ctx)
        except (ConfigError, BackboneWeightsError) as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_OneLineErrors)
@click.version_option(package_name="haloae-sweeps")
def main() -> None:
    """HaloAE anomaly detection: models, training, sweeps, tables and exports."""


_PRESET = click.option("--preset", default="paper", show_default=True, help="Named preset (paper, paper_lean, cpu, tiny).")
_VARIANT = click.option("--variant", default=None, help="A named ablation variant (see `haloae variants`).")
_SET = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Dotted override, e.g. model.block_size=8.")


@main.command()
@_PRESET
@_VARIANT
@_SET
@click.option("--flat/--nested", default=True, help="Dotted keys (as logged to MLflow) or nested.")
def config(preset: str, variant: str | None, overrides: tuple[str, ...], flat: bool) -> None:
    """Print the effective configuration (validated) as JSON."""
    from haloae.config import HaloAEConfig

    cfg = HaloAEConfig.from_overrides(preset, list(overrides), variant=variant)
    click.echo(json.dumps(cfg.flatten() if flat else cfg.to_dict(), indent=2, default=list))


@main.command()
def variants() -> None:
    """List the named ablation variants (Tables 3 and 4, structure, attention)."""
    from haloae.variants import VARIANTS

    for v in VARIANTS.values():
        click.echo(f"{v.name:24s} {v.table:10s} {v.label}")


@main.command()
@_PRESET
@_VARIANT
@_SET
@click.option("--batch", default=2, show_default=True)
def summary(preset: str, variant: str | None, overrides: tuple[str, ...], batch: int) -> None:
    """Build the model, run one forward pass on random input, print shapes and parameter counts."""
    import torch

    from haloae.config import HaloAEConfig
    from haloae.model import HaloAE, count_parameters

    cfg = HaloAEConfig.from_overrides(preset, list(overrides), variant=variant)
    model = HaloAE(cfg).eval()
    s = cfg.model.image_size
    with torch.no_grad():
        out = model(torch.randn(batch, 3, s, s))
    click.echo(f"preset={cfg.preset} variant={cfg.variant} arch={cfg.model.arch} attention={cfg.model.attention}")
    click.echo(f"input: {(batch, 3, s, s)}")
    for name, value in out._asdict().items():
        click.echo(f"{name:8s}: {tuple(value.shape) if value is not None else '-'}")
    for part in ("encoder", "decoder", "image_decoder", "classifier"):
        module = getattr(model, part)
        click.echo(f"{part:14s} {count_parameters(module) if module is not None else 0:>12,d}")
    click.echo(f"{'trainable':14s} {count_parameters(model):>12,d}")


if __name__ == "__main__":
    main()
