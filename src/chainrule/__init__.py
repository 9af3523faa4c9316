"""chainrule: deep feed-forward networks trained by error back-propagation, on NumPy.

>>> import numpy as np, chainrule as cr
>>> net = cr.DNN(hidden_depth=2, num_neuron=8, num_input=4, num_output=3, rng=0)
>>> x, t = np.random.default_rng(0).normal(size=(6, 4)), np.array([0, 1, 2, 0, 1, 2])
>>> cr.gradient_check(net, cr.SoftmaxCrossEntropy(), x, t).passed
True
"""

from . import datasets, kernels, metrics, optim, schedules
from ._version import __version__
from .augmentation import RandomShift
from .conv import AvgPool2D, Conv2D, MaxPool2D
from .data import train_validation_split
from .export import export_onnx
from .gradcheck import GradientCheckError, GradientCheckReport, gradient_check
from .io import Checkpoint, load, load_checkpoint, save
from .kernels import threads
from .layers import (
    BatchNorm,
    Dense,
    Dropout,
    Flatten,
    Layer,
    LeakyReLU,
    ReLU,
    Rescaling,
    Sigmoid,
    Softmax,
    Tanh,
)
from .losses import (
    BinaryCrossEntropy,
    CrossEntropy,
    Loss,
    MeanSquaredError,
    SoftmaxCrossEntropy,
)
from .network import CNN, DNN, MLP, Sequential
from .numerical import gradient_descent, numerical_gradient
from .optim import SGD, AdaGrad, Adam, AdamW, Momentum, Nesterov, Optimizer, RMSProp
from .progress import ProgressBar
from .schedules import CosineLR, StepLR
from .train import (
    Callback,
    DivergenceError,
    EarlyStopping,
    History,
    LearningRateScheduler,
    evaluate,
    fit,
)

__all__ = [
    "CNN",
    "DNN",
    "MLP",
    "SGD",
    "AdaGrad",
    "Adam",
    "AdamW",
    "AvgPool2D",
    "BatchNorm",
    "BinaryCrossEntropy",
    "Callback",
    "Checkpoint",
    "Conv2D",
    "CosineLR",
    "CrossEntropy",
    "Dense",
    "DivergenceError",
    "Dropout",
    "EarlyStopping",
    "Flatten",
    "GradientCheckError",
    "GradientCheckReport",
    "History",
    "Layer",
    "LeakyReLU",
    "LearningRateScheduler",
    "Loss",
    "MaxPool2D",
    "MeanSquaredError",
    "Momentum",
    "Nesterov",
    "Optimizer",
    "ProgressBar",
    "RMSProp",
    "RandomShift",
    "ReLU",
    "Rescaling",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "SoftmaxCrossEntropy",
    "StepLR",
    "Tanh",
    "__version__",
    "datasets",
    "evaluate",
    "export_onnx",
    "fit",
    "gradient_check",
    "gradient_descent",
    "kernels",
    "load",
    "load_checkpoint",
    "metrics",
    "numerical_gradient",
    "optim",
    "save",
    "schedules",
    "threads",
    "train_validation_split",
]
