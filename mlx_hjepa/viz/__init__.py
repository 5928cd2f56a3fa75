"""Pictures of what a model sees and learned: masks and hierarchy windows over images, last-block
attention, PCA feature maps, nearest neighbours. Used by the run report and, during training, by
`logging.log_images` / `logging.log_attention`."""

from .live import ImageLogger, first_training_batch, image_logger, write_attention_images, write_mask_images

__all__ = ["ImageLogger", "first_training_batch", "image_logger", "write_attention_images", "write_mask_images"]
