"""`python -m mlx_hjepa.train` with a recording Trainer, for tests/test_distributed.py.

    mlx.launch -n 2 --backend ring python tests/distributed_driver.py DUMP_DIR CONFIG [train args]

Runs the real command line (mlx.launch group, exit codes, error sentences) and, after
training, writes this rank's parameters to DUMP_DIR/params_rank{r}.safetensors and the
sample ids each of its epochs read to DUMP_DIR/seen_rank{r}.json. With DIE_AT_STEP=N
in the environment, rank DIE_RANK (default 1) kills itself with SIGKILL on reaching
optimizer step N, as a crashed or OOM-killed process would; with DIE_MODE=hang it stops
answering instead (sleeps), as a host that dropped off the network would. SYNTHETIC_TRAIN_SIZE=n makes
the built-in synthetic train split n images (generating the default 5,000 takes seconds
in every process).
"""

import json
import os
import signal
import sys
import time
from pathlib import Path

import mlx_hjepa  # noqa: F401  (fast BLAS before mlx.core)
import mlx.core as mx
from mlx.utils import tree_flatten

from mlx_hjepa.data import synthetic
from mlx_hjepa.train import __main__ as cli
from mlx_hjepa.train import trainer as trainer_module


def recording_trainer(dump_dir):
    class RecordingTrainer(trainer_module.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.seen = {}
            epoch_iter = self.loader.epoch_iter

            def recording_epoch_iter(epoch, start_batch=0):
                for batch in epoch_iter(epoch, start_batch):
                    self.seen.setdefault(str(epoch), []).extend(int(i) for i in batch["index"])
                    self._maybe_die()
                    yield batch

            self.loader.epoch_iter = recording_epoch_iter

        def _maybe_die(self):
            die_at = os.environ.get("DIE_AT_STEP")
            if die_at and self.rank == int(os.environ.get("DIE_RANK", "1")) and self.global_step >= int(die_at):
                if os.environ.get("DIE_MODE") == "hang":
                    self.watchdog.pause()  # silent, like a host that is gone: the others must notice
                    time.sleep(60)
                os.kill(os.getpid(), signal.SIGKILL)

        def fit(self):
            summary = super().fit()
            params = dict(tree_flatten(self.model.parameters()))
            mx.save_safetensors(str(dump_dir / f"params_rank{self.rank}.safetensors"), params)
            (dump_dir / f"seen_rank{self.rank}.json").write_text(json.dumps(self.seen))
            return summary

    return RecordingTrainer


def main(argv):
    dump_dir = Path(argv[0])
    dump_dir.mkdir(parents=True, exist_ok=True)
    if os.environ.get("SYNTHETIC_TRAIN_SIZE"):
        synthetic.DEFAULT_SIZES["train"] = int(os.environ["SYNTHETIC_TRAIN_SIZE"])
    cli.Trainer = recording_trainer(dump_dir)  # the name the command line builds its Trainer from
    return cli.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
