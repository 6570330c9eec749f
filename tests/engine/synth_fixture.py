"""A tiny synthetic dataset and recipe shared by the training tests (12 classes, 2 videos each)."""

from __future__ import annotations

from pathlib import Path

from tubelet.data.synthetic import write_synthetic_dataset


def write_tiny_synth(root: Path) -> Path:
    """12 train and 12 val videos of 8 frames at 32x32 (trained at 16x16); returns the folder."""
    write_synthetic_dataset(root, videos_per_class=2, frames=8, size=32, seed=0)
    return root


def tiny_overrides(root: Path) -> list[str]:
    """A one-block model on 4 frames of 16x16, 3 steps an epoch, checkpoints every step."""
    return [
        "model=timesformer_divided_tiny_p8_8x32", "model.depth=1", "model.embed_dim=32", "model.num_heads=2",
        f"data.train={root / 'train.csv'}", f"data.val={root / 'val.csv'}", "data.num_frames=4",
        "data.img_size=16", "data.num_workers=0", "train.batch_size=4", "train.epochs=2",
        "train.optimizer=adamw", "train.lr=0.001", "train.warmup_epochs=1", "train.progress=false",
        "train.log_every=1", "train.save_every_steps=1", "train.keep_last=10", "eval.views=[1,1]",
    ]
