"""Optional TensorBoard scalars (`logging.use_tensorboard`), written with the `tensorboard`
package alone (no torch). Without it installed, one warning and training goes on."""

import time
import warnings


class TensorBoardWriter:
    def __init__(self, log_dir):
        try:
            from tensorboard.compat.proto import event_pb2, summary_pb2
            from tensorboard.summary.writer.event_file_writer import EventFileWriter
        except ImportError:
            warnings.warn("logging.use_tensorboard is on but the tensorboard package is not installed; "
                          "install it with pip install 'mlx-hjepa[tensorboard]'. Training continues; metrics "
                          "still go to metrics.jsonl.", stacklevel=2)
            self._writer = None
            return
        self._event, self._summary = event_pb2.Event, summary_pb2.Summary
        self._writer = EventFileWriter(str(log_dir))

    def scalars(self, step, record):
        if self._writer is None:
            return
        values = [self._summary.Value(tag=f"train/{key}", simple_value=float(value))
                  for key, value in record.items() if isinstance(value, (int, float)) and key not in ("step",)]
        for name, count in record.get("dataset_mix", {}).items():
            values.append(self._summary.Value(tag=f"data/{name}", simple_value=float(count)))
        for name, weight in record.get("dataset_weights", {}).items():
            values.append(self._summary.Value(tag=f"data_weight/{name}", simple_value=float(weight)))
        self._writer.add_event(self._event(wall_time=time.time(), step=int(step), summary=self._summary(value=values)))
        self._writer.flush()

    def image(self, step, tag, png, height, width):
        if self._writer is None:
            return
        image = self._summary.Image(height=height, width=width, colorspace=3, encoded_image_string=png)
        value = self._summary.Value(tag=tag, image=image)
        self._writer.add_event(self._event(wall_time=time.time(), step=int(step), summary=self._summary(value=[value])))
        self._writer.flush()

    def close(self):
        if self._writer is not None:
            self._writer.close()
