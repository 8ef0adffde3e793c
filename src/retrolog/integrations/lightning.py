"""``RetrologCallback`` for PyTorch Lightning (``lightning.pytorch`` or ``pytorch_lightning``).

Recording: hyper-parameters (``save_hyperparameters``) become args; every ``self.log`` made in a
training batch is recorded at ``(epoch, step)``; metrics logged elsewhere (validation, epoch
hooks, and the epoch aggregates of ``on_epoch=True`` batch logs) are recorded once per epoch, as
Lightning reduced them; at each epoch's end (before the module's ``on_train_epoch_end``) the
model, optimizers, LR schedulers, RNG states and Lightning's loop counters and metrics are
checkpointed through retrolog.

Replay of an epoch whose batches are not needed: the first batch's ``on_train_batch_start``
returns -1 (Lightning then ends the epoch's batches); at the epoch's end the checkpoint is
restored and, when the recorded run validated after its batches, validation runs again (Lightning
skips it after a -1), so ``on_validation_epoch_end`` and ``on_train_epoch_end`` run on the
recorded state. Loggers and checkpoint files go to a scratch directory.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from types import ModuleType, SimpleNamespace
from typing import Any

from ..record import api
from .driver import LoopDriver, rng_state, scratch_dir, set_rng_state

PACKAGES = ("lightning.pytorch", "pytorch_lightning")


def lightning_package(name: str | None = None) -> ModuleType:
    """The Lightning package to subclass: ``name``, else the one the process imported already,
    else the first installed of ``lightning.pytorch`` and ``pytorch_lightning``."""
    if name is not None:
        return importlib.import_module(name)
    for candidate in PACKAGES:
        if candidate in sys.modules:
            return sys.modules[candidate]
    for candidate in PACKAGES:
        try:
            return importlib.import_module(candidate)
        except ImportError:
            continue
    raise ImportError(
        "retrolog.lightning needs PyTorch Lightning: pip install 'retrolog[lightning]'"
    )


class _LoopState:
    """Lightning's loop counters and logged metrics where an epoch's batches end, as an object
    retrolog checkpoints (``__retrolog_state__``) and restores in place."""

    def __init__(self, trainer: Any, hooks: _Hooks) -> None:
        self.trainer = trainer
        self.hooks = hooks
        self.validated = False  # read after a restore: the recorded run validated at this point

    def __retrolog_state__(self) -> dict[str, Any]:
        trainer = self.trainer
        loop = trainer.fit_loop.epoch_loop
        connector = trainer._logger_connector
        return {
            "batch_progress": loop.batch_progress.state_dict(),
            "scheduler_progress": loop.scheduler_progress.state_dict(),
            "optim_progress": loop.automatic_optimization.optim_progress.state_dict(),
            "manual_progress": loop.manual_optimization.optim_step_progress.state_dict(),
            "batches_that_stepped": loop._batches_that_stepped,
            "callback_metrics": _metrics(trainer.callback_metrics),
            "logged_metrics": _metrics(connector._logged_metrics),
            "progress_bar_metrics": _metrics(connector._progress_bar_metrics),
            "should_stop": bool(trainer.should_stop),
            "validated": self.hooks.validated,
        }

    def __retrolog_restore__(self, state: dict[str, Any]) -> None:
        trainer = self.trainer
        loop = trainer.fit_loop.epoch_loop
        connector = trainer._logger_connector
        loop.batch_progress.load_state_dict(state["batch_progress"])
        loop.scheduler_progress.load_state_dict(state["scheduler_progress"])
        loop.automatic_optimization.optim_progress.load_state_dict(state["optim_progress"])
        loop.manual_optimization.optim_step_progress.load_state_dict(state["manual_progress"])
        loop._batches_that_stepped = int(state["batches_that_stepped"])
        connector._callback_metrics = dict(state["callback_metrics"])
        connector._logged_metrics = dict(state["logged_metrics"])
        connector._progress_bar_metrics = dict(state["progress_bar_metrics"])
        trainer.should_stop = bool(state["should_stop"])
        self.validated = bool(state["validated"])


def _metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Logged metrics as a checkpoint holds them: tensors detached, numbers as they are."""
    out = {}
    for key, value in metrics.items():
        if hasattr(value, "detach"):
            value = value.detach().cpu()
        if isinstance(value, (int, float, bool)) or hasattr(value, "numel"):
            out[str(key)] = value
    return out


def _scalar(value: Any) -> bool:
    """A value retrolog stores as a number (not a torchmetrics ``Metric`` object, say)."""
    if isinstance(value, (int, float, bool)):
        return True
    numel = getattr(value, "numel", None)
    return callable(numel) and numel() == 1


# Hooks Lightning calls for every batch that the callback has no use for. Lightning dispatches a
# hook to a callback only when the attribute is callable (``_call_callback_hooks``), so None
# spares each batch these calls (~2.4 us each, with their profiler context: ~12 us a batch).
UNUSED_BATCH_HOOKS = (
    "on_train_batch_end",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_test_batch_start",
    "on_test_batch_end",
    "on_predict_batch_start",
    "on_predict_batch_end",
)


class _Hooks:
    """The callback's behaviour, mixed into a subclass of the chosen package's ``Callback``."""

    def __init__(self) -> None:
        super().__init__()
        self.driver = LoopDriver("lightning")
        self.validated = False
        self._epoch_keys: dict[str, None] = {}  # metric keys to record at the epoch's end
        self._skip_batch = False
        self._patched: list[str] = []
        self._loop_state: _LoopState | None = None
        self._scratch: str | None = None

    # Lightning saves callbacks' state into its own checkpoints: nothing of ours belongs there.
    def state_dict(self) -> dict[str, Any]:
        return {}

    def _guard(self, where: str, action: Callable[[], None]) -> None:
        self.driver.guard(where, action)

    # -- set-up ------------------------------------------------------------------------------
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage != "fit":
            return
        self._guard("setup", lambda: self._setup(trainer))

    def _setup(self, trainer: Any) -> None:
        session = self.driver.start()
        if session is None or self.driver.replay is None:
            return
        # A replay writes nothing of the user's: loggers off, checkpoints into scratch.
        self._scratch = scratch_dir("lightning")
        trainer._default_root_dir = self._scratch
        trainer.loggers = []
        for callback in trainer.callbacks:
            if hasattr(callback, "dirpath") and hasattr(callback, "save_top_k"):
                callback.dirpath = self._scratch

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self._guard("on_fit_start", lambda: self._fit_start(trainer, pl_module))

    def _fit_start(self, trainer: Any, pl_module: Any) -> None:
        if self.driver.start() is None:
            return
        if self in trainer.callbacks:  # first among callbacks: restore before others' epoch ends
            trainer.callbacks.remove(self)
            trainer.callbacks.insert(0, self)
        hparams: dict[str, Any] = {}
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None:
            hparams.update(dict(getattr(datamodule, "hparams", {}) or {}))
        hparams.update(dict(getattr(pl_module, "hparams", {}) or {}))
        if hparams:  # as a namespace: --kwargs cannot change a module already built (refused)
            api.args(SimpleNamespace(**hparams))
        objects: dict[str, Any] = {"model": pl_module}
        for i, optimizer in enumerate(trainer.optimizers):
            objects["optimizer" if i == 0 else f"optimizer_{i}"] = optimizer
        for i, config in enumerate(trainer.lr_scheduler_configs):
            objects["scheduler" if i == 0 else f"scheduler_{i}"] = config.scheduler
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if scaler is not None and hasattr(scaler, "state_dict"):
            objects["grad_scaler"] = scaler
        self._loop_state = objects["lightning_loops"] = _LoopState(trainer, self)
        api.checkpointing(**objects)
        self._patch(pl_module, "log", self._wrap_log(pl_module.log))
        if self.driver.replay is not None:
            self._patch(
                pl_module,
                "on_train_batch_start",
                self._wrap_batch_start(pl_module.on_train_batch_start),
            )

    def _patch(self, pl_module: Any, name: str, function: Callable[..., Any]) -> None:
        object.__setattr__(pl_module, name, function)  # an instance attribute shadows the method
        self._patched.append(name)

    def _wrap_log(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def log(name: str, value: Any, *args: Any, **kwargs: Any) -> Any:
            result = original(name, value, *args, **kwargs)
            if not self.driver.broken:
                self._seen(name, value, kwargs)
            return result

        return log

    def _wrap_batch_start(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def on_train_batch_start(batch: Any, batch_idx: int, *args: Any) -> Any:
            if self._skip_batch:
                return -1  # Lightning ends this epoch's batches
            return original(batch, batch_idx, *args)

        return on_train_batch_start

    def _seen(self, name: str, value: Any, kwargs: dict[str, Any]) -> None:
        """A ``self.log`` call: batch values now, epoch values at the epoch's end."""
        driver = self.driver
        if driver.epoch is None:
            return
        in_step = driver.step_open
        on_step = kwargs.get("on_step")
        on_epoch = kwargs.get("on_epoch")
        on_step = in_step if on_step is None else bool(on_step)
        on_epoch = (not in_step) if on_epoch is None else bool(on_epoch)
        if in_step and on_step:
            if hasattr(value, "is_cuda") and value.numel() == 1:
                driver.log_tensor(name, value)
            elif _scalar(value):
                driver.log(name, value)
        if on_epoch:
            key = f"{name}_epoch" if on_step else name
            if key not in self._epoch_keys:
                self._epoch_keys[key] = None

    def _record_epoch_metrics(self, trainer: Any) -> None:
        if not self._epoch_keys or self.driver.epoch is None:
            return
        metrics = trainer.callback_metrics
        for key in self._epoch_keys:
            if key in metrics and _scalar(metrics[key]):
                self.driver.log(key, metrics[key])
        self._epoch_keys = {}

    # -- loops -------------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        def start() -> None:
            self._record_epoch_metrics(trainer)
            self.driver.start_epoch(int(trainer.current_epoch))

        self._guard("on_train_epoch_start", start)

    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        driver = self.driver  # once per batch: no closure, no guard call
        if driver.broken:
            return
        try:
            self.validated = False
            if driver.skip is not None and driver.epoch is not None:
                driver.begin_skip()
                self._skip_batch = True
                return
            driver.start_step(batch_idx)
        except Exception as exc:  # a run never dies because retrolog failed (replay re-raises)
            driver.fail("on_train_batch_start", exc)

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        def start() -> None:
            self.driver.end_step()
            self.driver.flush_tensors()
            self.validated = True

        self._guard("on_validation_start", start)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._guard("on_train_epoch_end", lambda: self._epoch_end(trainer, pl_module))

    def _epoch_end(self, trainer: Any, pl_module: Any) -> None:
        driver = self.driver
        if driver.skipping:
            self._skip_batch = False
            if driver.end_skip() and self._loop_state is not None and self._loop_state.validated:
                self._validate_again(trainer)
            return
        driver.end_step_loop()

    def _validate_again(self, trainer: Any) -> None:
        """Run the validation the recorded run ran after this epoch's batches (Lightning skips
        it when ``on_train_batch_start`` returns -1), leaving the RNG as the checkpoint has it."""
        rng = rng_state()
        connector = trainer._logger_connector
        first = connector._first_loop_iter
        trainer.validating = True
        trainer.fit_loop.epoch_loop.val_loop.run()
        trainer.training = True
        connector._first_loop_iter = first
        set_rng_state(rng)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        def end() -> None:
            self._record_epoch_metrics(trainer)
            self.driver.end_main()

        self._guard("on_train_end", end)

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        for name in self._patched:
            pl_module.__dict__.pop(name, None)
        self._patched = []


_CLASSES: dict[tuple[str, ...], type] = {}


def callback_class(package: str | None = None) -> type:
    """``RetrologCallback`` as a subclass of ``package``'s ``Callback`` (see lightning_package);
    without ``package``, of the ``Callback`` of every Lightning package the process imported, so
    either package's ``Trainer`` accepts it (a library may import the other one)."""
    if package is not None:
        modules = [lightning_package(package)]
    else:
        modules = [sys.modules[name] for name in PACKAGES if name in sys.modules]
        modules = modules or [lightning_package()]
    key = tuple(module.__name__ for module in modules)
    if key not in _CLASSES:
        bases = tuple(dict.fromkeys(module.Callback for module in modules))
        _CLASSES[key] = type(
            "RetrologCallback",
            (_Hooks, *bases),
            {
                "__doc__": _DOC,
                "__module__": "retrolog.lightning",
                **dict.fromkeys(UNUSED_BATCH_HOOKS),
            },
        )
    return _CLASSES[key]


_DOC = """Record a Lightning run with retrolog: ``Trainer(callbacks=[RetrologCallback()])``.

Hyper-parameters become args, ``self.log`` values are recorded at the loop coordinates ``epoch``
and ``step`` (the batch index in the epoch), and model, optimizers, LR schedulers, RNG and the
loop state are checkpointed at epoch ends, so ``retrolog replay`` can fill in a ``retrolog.log``
added later to ``training_step`` (per step) or to an epoch-end hook (per epoch, skipping the
epochs' batches).
"""
