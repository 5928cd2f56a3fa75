"""python -m mlx_hjepa.train CONFIG [--set key.path=value ...] [--resume auto|RUN_DIR] [--output-dir DIR] [--dry-run]"""

import argparse
import sys
from pathlib import Path

from mlx.utils import tree_flatten

from .. import config as C
from .._jit import use_jit_flags
from .._malloc import keep_freed_memory
from .._streams import widen_eval_window
from ..errors import add_debug_flag, run_command
from ..devices import DeviceError, select_device
from ..distributed import init_distributed
from ..models import step_flops
from ..rundir import RunDirLocked
from .stops import TrainingError
from .trainer import Trainer


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m mlx_hjepa.train", description="H-JEPA pretraining of a ViT in MLX.")
    ap.add_argument("config", nargs="?", help="YAML config (configs/quickstart.yaml); optional with --resume RUN_DIR")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, e.g. --set training.lr=5e-4 (repeatable)")
    ap.add_argument("--resume", metavar="auto|RUN_DIR",
                    help="auto: continue the run directory's latest checkpoint if there is one; RUN_DIR: continue "
                         "that run with its own config.yaml")
    ap.add_argument("--output-dir", help="parent of the run directory (overrides experiment.output_dir)")
    ap.add_argument("--dry-run", action="store_true",
                    help="print the resolved config, model size, data mix and steps per epoch, then exit")
    ap.add_argument("--stop-at-step", type=int, metavar="N",
                    help="checkpoint and stop once the run reaches optimizer step N (continue with --resume auto)")
    add_debug_flag(ap)
    return ap.parse_args(argv)


def load(args):
    overrides = list(args.overrides)
    run_dir = None
    if args.resume not in (None, "auto"):
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise C.ConfigError(f"--resume {run_dir}: no config.yaml there; pass a run directory written by "
                                "mlx_hjepa.train, or use --resume auto with the config.")
        source = args.config or run_dir / "config.yaml"
    elif args.config is None:
        raise C.ConfigError("no config given; pass a YAML file, e.g. python -m mlx_hjepa.train configs/quickstart.yaml.")
    else:
        source = args.config
    if args.output_dir:
        overrides.append(f"experiment.output_dir={args.output_dir}")
    return C.load_config(source, overrides), run_dir


def dry_run(trainer):
    """Print what the run would do. `trainer` is built exactly as for training (every check of the
    real run before its first step has passed), but nothing is written."""
    cfg, model = trainer.cfg, trainer.model
    masks = trainer.sampler(cfg.data.batch_size, 0, 0)
    n_enc = sum(v.size for _, v in tree_flatten(model.encoder.parameters()))
    n_train = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))
    flops = step_flops(model.config(), masks["context"].shape[1], *masks["targets"].shape[1:])
    print(C.config_to_yaml(cfg))
    print(f"encoder: {n_enc / 1e6:.2f}M parameters, {model.grid_size[0]}x{model.grid_size[1]} patches; "
          f"trainable (encoder + predictor + heads): {n_train / 1e6:.2f}M")
    print(f"train step: {flops / 1e9:.2f} GFLOP per image (context {masks['context'].shape[1]} tokens, "
          f"{masks['targets'].shape[1]} targets of {masks['targets'].shape[2]})")
    dataset = trainer.dataset
    if hasattr(dataset, "get_dataset_stats"):
        how = f"sampling {dataset.strategy}" if len(dataset.datasets) > 1 else "a fresh random subset every epoch"
        print(f"data: {dataset.samples_per_epoch} images per epoch, {how}")
        for name, s in dataset.get_dataset_stats().items():
            weight = "" if s["weight"] is None else f", weight {s['weight']:.3f}"  # only a weighted mix reads weights
            print(f"data: {name} ({s['split']}): {s['size']} images{weight}, "
                  f"{s['expected_samples_per_epoch']} expected per epoch")
        for epoch, weights in dataset.weight_schedule.items():
            print(f"data: from epoch {epoch}: weights {weights}")
    else:
        print(f"data: {dataset.name} ({getattr(dataset, 'split', '')}): {len(dataset)} images")
    print(f"steps per epoch: {trainer.steps_per_epoch} (global batch {trainer.global_batch}), "
          f"total {trainer.total_steps}")


def train(args):
    cfg, run_dir = load(args)
    world = init_distributed()
    select_device(cfg)
    trainer = Trainer(cfg, run_dir=run_dir, resume=args.resume is not None or args.dry_run,
                      stop_at_step=args.stop_at_step, world=world)
    if args.dry_run:
        if trainer.is_main:  # under mlx.launch, one copy of the summary
            dry_run(trainer)
        return 0
    summary = trainer.fit()
    if summary.get("finished") and "encoder" in summary:  # rank 0 of several processes, or the only one
        print(f"done: run directory {summary['run_dir']}; encoder {summary.get('encoder')}")
    return 0


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    keep_freed_memory()  # MLX's CPU backend re-faults every freed buffer otherwise (_malloc.py)
    use_jit_flags()  # lets GCC vectorise MLX's fused CPU kernels that select (_jit.py)
    widen_eval_window()  # before any evaluation: lets the step's two CPU streams overlap (_streams.py)
    try:
        return run_command(lambda: train(args), args, user_errors=(TrainingError, DeviceError, RunDirLocked))
    except KeyboardInterrupt:  # a second Ctrl-C (or a signal) while the first was being handled
        print("error: interrupted; the last checkpoint in the run directory is intact (continue with --resume auto).",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
