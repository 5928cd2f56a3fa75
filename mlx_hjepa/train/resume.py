"""Continuing a run: rank 0 loads the latest checkpoint, every rank takes rank 0's state."""

from ..distributed import broadcast_from_rank0, broadcast_ints
from ..rundir import load_checkpoint, read_trainer_state
from .stops import TrainingError


def check_world_size(folder, world_size):
    """Before anything is written: a checkpoint only continues with the world size that wrote it."""
    saved = read_trainer_state(folder).get("world_size", 1)
    if saved != world_size:
        how = "without mlx.launch" if saved == 1 else f"under mlx.launch with {saved} processes"
        raise TrainingError(f"{folder} was written by {saved} process(es) and this run has {world_size}; resume it "
                            f"{how}, so the data order and global batch stay the same (or start a new run with "
                            "another experiment.name).")


def restore(trainer):
    """Load trainer.resume_from into the model and optimizer; returns the checkpoint's trainer state."""
    state = load_checkpoint(trainer.resume_from, trainer.model, trainer.step.optimizer)
    trainer.epoch, trainer.batch_in_epoch, trainer.global_step = state["epoch"], state["batch"], state["step"]
    trainer.step.micro_step = trainer.batch_in_epoch
    trainer.run.truncate_metrics(trainer.global_step)  # lines after the checkpoint will be logged again
    trainer.log(f"resumed from {trainer.resume_from} (epoch {trainer.epoch}, step {trainer.global_step})")
    return state


def sync_ranks(trainer):
    """Every rank continues from rank 0's weights, optimizer state and position in the data."""
    if trainer.group is None:
        return
    trainer.model.update(broadcast_from_rank0(trainer.model.parameters(), trainer.group))
    trainer.step.optimizer.state.update(broadcast_from_rank0(trainer.step.optimizer.state, trainer.group))
    position = broadcast_ints([trainer.epoch, trainer.batch_in_epoch, trainer.global_step], trainer.group)
    trainer.epoch, trainer.batch_in_epoch, trainer.global_step = position
    trainer.step.micro_step = trainer.batch_in_epoch
