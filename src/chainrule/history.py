"""The record of a training run: one entry per epoch, saved with checkpoints and plotted."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["History"]


@dataclass
class History:
    """Per-epoch records of a :func:`fit` run (``val_*`` stay empty without validation data).

    ``accuracy`` is measured on the training batches as they were trained (in training mode, so
    with dropout), like Keras; evaluate the model afterwards for the inference-mode figure.
    """

    epoch: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def append(self, **record: float) -> None:
        for key, value in record.items():
            getattr(self, key).append(value)

    def to_dict(self) -> dict[str, list[float]]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown history keys {sorted(unknown)}")
        return cls(**{k: list(v) for k, v in data.items()})

    def __len__(self) -> int:
        return len(self.epoch)
