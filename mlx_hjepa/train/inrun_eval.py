"""k-NN of the target encoder during and at the end of a run (rank 0), and its random-init floor."""

from .. import config as C
from ..data import build_eval_datasets
from ..eval import evaluate_knn
from ..eval.baselines import pixel_knn
from ..models import HJEPA

EVAL_FILE = "eval_knn.json"


class InRunEval:
    def __init__(self, cfg, metrics, log, enabled=True):
        self.cfg, self.metrics, self.log = cfg, metrics, log
        self.enabled = enabled and cfg.evaluation.eval_frequency > 0
        self.history = []

    def due(self, epoch):
        every = self.cfg.evaluation.eval_frequency
        return self.enabled and epoch % every == 0 and epoch < self.cfg.training.epochs

    def knn(self, encoder):
        train, val = build_eval_datasets(self.cfg)
        return evaluate_knn(encoder, train, val, k=self.cfg.evaluation.knn_k)

    def evaluate(self, model, step, epoch):
        """k-NN of model's target encoder, logged; None when the evaluation data is missing."""
        if not self.enabled:
            return None
        try:
            result = self.knn(model.target_encoder)
        except (FileNotFoundError, ValueError) as err:
            self.log(f"k-NN evaluation skipped: {err}")
            return None
        record = {"step": step, "epoch": epoch, "knn_top1": result["top1"], "knn_top5": result["top5"],
                  "knn_k": self.cfg.evaluation.knn_k}
        self.history.append(record)
        self.metrics.write(record)
        self.log(f"epoch {epoch}: k-NN top-1 {result['top1']:.2%} (top-5 {result['top5']:.2%})")
        return record

    def final(self, model, step, epoch, run_dir):
        """The last k-NN beside its two floors, same protocol: the same encoder at its random
        initialisation and the raw pixels; returns the summary entries (empty when evaluation is off
        or its data is missing)."""
        final = self.evaluate(model, step, epoch)
        if final is None:
            return {}
        fresh = HJEPA.from_config(C.model_config(self.cfg), seed=self.cfg.experiment.seed)
        random_init = self.knn(fresh.target_encoder)
        raw_pixels = pixel_knn(*build_eval_datasets(self.cfg), self.cfg.data.image_size, k=self.cfg.evaluation.knn_k)
        final.update(random_init_knn_top1=random_init["top1"], raw_pixels_knn_top1=raw_pixels["top1"])
        self.metrics.write({"step": step, "event": "final", **final})
        self.log(f"k-NN top-1: trained {final['knn_top1']:.2%} vs random init {random_init['top1']:.2%} "
                 f"vs raw pixels {raw_pixels['top1']:.2%}")
        run_dir.write_json(EVAL_FILE, {"trained": final, "random_init": random_init, "raw_pixels": raw_pixels})
        return {"knn_top1": final["knn_top1"], "random_init_knn_top1": random_init["top1"],
                "raw_pixels_knn_top1": raw_pixels["top1"]}
