# SPDX-License-Identifier: Apache-2.0
"""The ``haloae`` command. Each subcommand imports what it needs inside its body, so ``--help`` is fast.

Bad input is a one-line error on stderr and exit code 2, before any expensive work starts.
"""

from __future__ import annotations

import json
import sys

import click

from haloae.vocab import DEFAULT_OBJECTIVE, LEAKY_LABEL, is_leaky

# Subcommands of the layers above the library, imported only when run (they import Ray / MLflow):
# name -> "module:attribute" of a click command.
LAYER_COMMANDS = {
    "sweep": "sweeps.cli:sweep",
    "tables": "analysis.cli:tables",
    "figures": "analysis.cli:figures",
    "report": "analysis.cli:report",
    "sweeps": "analysis.cli:sweeps_list",
    "export": "analysis.cli:export",
    "predict": "analysis.cli:predict",
}


class _HaloAEGroup(click.Group):
    """Lazily loaded layer commands, and input errors as one line on stderr with exit code 2."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._available_layer_commands()))

    def get_command(self, ctx: click.Context, name: str):
        command = super().get_command(ctx, name)
        if command is None and name in LAYER_COMMANDS:
            import importlib

            module, attr = LAYER_COMMANDS[name].split(":")
            command = getattr(importlib.import_module(module), attr)
        return command

    @staticmethod
    def _available_layer_commands() -> list[str]:
        import importlib.util

        return [n for n, target in LAYER_COMMANDS.items() if importlib.util.find_spec(target.split(":")[0]) is not None]

    def invoke(self, ctx: click.Context):
        from haloae.errors import InputError

        try:
            return super().invoke(ctx)
        except InputError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_HaloAEGroup)
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
    from haloae.presets import VARIANTS

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
    for part in ("encoder", "decoder", "image_decoder", "classifier"):  # an absent part counts 0
        click.echo(f"{part:14s} {count_parameters(getattr(model, part)):>12,d}")
    click.echo(f"{'trainable':14s} {count_parameters(model):>12,d}")


@main.command()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Dataset root to write.")
@click.option("--categories", default=None, help="Comma-separated synthetic categories (default: all).")
@click.option("--size", default=128, show_default=True, type=click.IntRange(min=16), help="Image side in pixels.")
@click.option("--seed", default=0, show_default=True)
def synth(out_dir: str, categories: str | None, size: int, seed: int) -> None:
    """Write a synthetic MVTec-format dataset (textures and objects with exact defect masks).

    Each category appears under OUT only once it is complete: a failed run leaves nothing behind."""
    from haloae.categories import SYNTH_CATEGORIES
    from haloae.synth import generate

    names = [c.strip() for c in categories.split(",")] if categories else None
    for name in names or []:
        if name not in SYNTH_CATEGORIES:
            raise click.UsageError(f"--categories: unknown {name!r}; valid: {', '.join(SYNTH_CATEGORIES)}")
    written = generate(out_dir, categories=names, size=size, seed=seed)
    click.echo(f"wrote {len(written)} categories to {out_dir}: {', '.join(written)}")


@main.command()
@click.option("--data-root", required=True, type=click.Path(), help="MVTec AD root (folders per category).")
@click.option("--category", required=True)
@_PRESET
@_VARIANT
@_SET
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option("--resume/--no-resume", default=True, show_default=True, help="Continue from OUT/checkpoint.pt.")
@click.option("--objective", default=DEFAULT_OBJECTIVE, show_default=True, help="Validation metric that chooses best.pt.")
@click.option("--mode", type=click.Choice(["max", "min"]), default="max", show_default=True, help="Best is the max or min.")
def train(data_root, category, preset, variant, overrides, out_dir, resume, objective, mode) -> None:
    """Train one HaloAE run on one category; validation picks the checkpoint, test is reported."""
    from pathlib import Path

    from haloae.category_data import prepare_data
    from haloae.config import HaloAEConfig
    from haloae.train import check_objective, fit, read_resume_state
    from haloae.vocab import CHECKPOINT_FILE

    check_objective(objective, mode)
    cfg = HaloAEConfig.from_overrides(preset, list(overrides), variant=variant)
    last = Path(out_dir) / CHECKPOINT_FILE
    if resume and last.is_file():
        read_resume_state(last, objective, mode, cfg)  # a bad checkpoint fails before the data is decoded
    data = prepare_data(cfg, data_root, category)  # validates the folder before any training
    result = fit(cfg, data, out_dir, resume=resume, objective=objective, mode=mode)
    _print_metrics(result.metrics)
    click.echo(f"best epoch {result.best_epoch} by {objective} ({mode}); run directory {result.out_dir}")


@main.command()
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--data-root", required=True, type=click.Path())
@click.option("--category", required=True)
@click.option("--json", "as_json", is_flag=True, help="Print every metric as JSON.")
def evaluate(checkpoint, data_root, category, as_json) -> None:
    """Evaluate a checkpoint on a category's validation and test data (every Table S1 scoring)."""
    from haloae.evaluation import evaluate_checkpoint
    from haloae.train import pick_device

    metrics = evaluate_checkpoint(checkpoint, data_root, category, pick_device("auto"))
    click.echo(json.dumps(metrics, indent=2, sort_keys=True)) if as_json else _print_metrics(metrics)


def _print_metrics(metrics: dict) -> None:
    for key in sorted(k for k in metrics if k.count("/") == 1 and not is_leaky(k)):
        click.echo(f"{key:28s} {metrics[key]:.4f}")
    for key in sorted(k for k in metrics if is_leaky(k)):  # eval.protocol=paper: never without its label
        click.echo(f"{key:28s} {metrics[key]:.4f}  {LEAKY_LABEL}")


if __name__ == "__main__":
    main()
