"""``RetrologCallback`` for the Hugging Face ``Trainer`` (a ``transformers.TrainerCallback``).

Recording: the ``TrainingArguments`` that differ from their defaults (and a few central ones)
become args; every value the Trainer logs (``on_log``: loss, learning rate, evaluation metrics)
is recorded at the current loop coordinates (``epoch``, and ``step``, the optimizer step within
the epoch, for logs made during a step), except timings (``*_runtime``, ``*_per_second``); at each
epoch's end (``on_epoch_end``, before the user's callbacks) the model, optimizer, LR scheduler,
RNG states, the ``TrainerState``, the Trainer's loss accumulators and the control flags are
checkpointed through retrolog.

Replay of an epoch whose batches are not needed: the Trainer tests ``should_epoch_stop`` only
after a step, so the first step of the epoch runs with ``training_step`` replaced by a no-op (no
forward or backward; its logging, evaluation and saving are switched off) and the epoch stops;
at ``on_epoch_end`` the checkpoint is restored, and the Trainer's own epoch-end logging,
evaluation and saving then run on the recorded state. ``output_dir`` becomes a scratch directory
and reporting integrations (TensorBoard, W&B, ...) are removed.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
from types import SimpleNamespace
from typing import Any

from transformers import Trainer, TrainerCallback

from ..record import api
from .driver import LoopDriver, scratch_dir

CORE_ARGS = (
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "weight_decay",
    "lr_scheduler_type",
    "warmup_steps",
    "optim",
    "seed",
)
UNTIMED = ("_runtime", "_per_second")  # logged values that measure time: not reproducible


def _plain(value: Any) -> Any:
    """A TrainingArguments value as an arg: enums by value; None when it is not storable."""
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)) and all(
        isinstance(v, (str, int, float, bool)) for v in value
    ):
        return list(value)
    return None


def training_args(args: Any) -> dict[str, Any]:
    """The arguments worth recording: those that differ from their defaults, and CORE_ARGS."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(args):
        if not field.init or field.name.startswith("_"):
            continue
        value = _plain(getattr(args, field.name, None))
        if value is None:
            continue
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = dataclasses.MISSING
        if field.name in CORE_ARGS or _plain(default) != value:
            out[field.name] = value
    return out


class _TrainerState:
    """The Trainer's own loop state where an epoch's steps end (``TrainerState``, the loss
    accumulators, the control flags), as an object retrolog checkpoints and restores in place."""

    def __init__(self, trainer: Any, hooks: RetrologCallback) -> None:
        self.trainer = trainer
        self.hooks = hooks

    def __retrolog_state__(self) -> dict[str, Any]:
        trainer = self.trainer
        state = {}
        for field in dataclasses.fields(trainer.state):
            value = getattr(trainer.state, field.name)
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                continue
            state[field.name] = value
        control = self.hooks.control
        frame = _epoch_frame()
        return {
            "locals": {k: _detached(frame.f_locals.get(k)) for k in EPOCH_LOCALS} if frame else {},
            "state": state,
            "tr_loss": trainer._tr_loss.detach().cpu().clone(),
            "total_loss_scalar": float(trainer._total_loss_scalar),
            "globalstep_last_logged": int(trainer._globalstep_last_logged),
            "current_flos": float(trainer.current_flos),
            "control": {f.name: getattr(control, f.name) for f in dataclasses.fields(control)}
            if control is not None
            else {},
        }

    def __retrolog_restore__(self, saved: dict[str, Any]) -> None:
        trainer = self.trainer
        for name, value in saved["state"].items():
            setattr(trainer.state, name, value)
        trainer._tr_loss.copy_(saved["tr_loss"].to(trainer._tr_loss.device))
        trainer._total_loss_scalar = saved["total_loss_scalar"]
        trainer._globalstep_last_logged = saved["globalstep_last_logged"]
        trainer.current_flos = saved["current_flos"]
        control = self.hooks.control
        if control is not None:
            for name, value in saved["control"].items():
                setattr(control, name, value)
        frame = _epoch_frame()
        if frame is not None and saved["locals"]:
            _write_frame_locals(frame, saved["locals"])


class RetrologCallback(TrainerCallback):
    """Record a Hugging Face Trainer run with retrolog: ``Trainer(..., callbacks=[RetrologCallback()])``.

    Training arguments become args, logged values are recorded at the loop coordinates ``epoch``
    and ``step`` (the optimizer step within the epoch), and the model, optimizer, scheduler, RNG
    and trainer state are checkpointed at epoch ends, so ``retrolog replay`` can fill in a
    ``retrolog.log`` added later to ``compute_loss`` (per step) or to a callback's
    ``on_epoch_end`` (per epoch, skipping the epochs' steps).
    """

    def __init__(self) -> None:
        self.driver = LoopDriver("transformers")
        self.trainer: Any = None
        self.control: Any = None
        self._epoch = 0
        self._step = 0
        self._patched = False

    def _guard(self, where: str, action: Any) -> None:
        self.driver.guard(where, action)

    # -- set-up ------------------------------------------------------------------------------
    def on_init_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._guard("on_init_end", lambda: self._init(args))

    def _init(self, args: Any) -> None:
        self.trainer = _find_trainer()
        if self.driver.start() is None or self.driver.replay is None:
            return
        # A replay writes nothing of the user's: outputs into scratch, no reporting.
        scratch = scratch_dir("transformers")
        args.output_dir = scratch
        if hasattr(args, "logging_dir"):
            args.logging_dir = scratch
        if self.trainer is not None:
            handler = self.trainer.callback_handler
            for callback in list(handler.callbacks):
                if type(callback).__module__.startswith("transformers.integrations"):
                    handler.callbacks.remove(callback)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.control = control
        self._guard("on_train_begin", lambda: self._train_begin(args, kwargs))

    def _train_begin(self, args: Any, kwargs: dict[str, Any]) -> None:
        if self.driver.start() is None:
            return
        trainer = self.trainer if self.trainer is not None else _find_trainer()
        self.trainer = trainer
        # as a namespace: --kwargs cannot change arguments the Trainer already uses (refused)
        api.args(SimpleNamespace(**training_args(args)))
        objects: dict[str, Any] = {"model": kwargs.get("model")}
        if kwargs.get("optimizer") is not None:
            objects["optimizer"] = kwargs["optimizer"]
        if kwargs.get("lr_scheduler") is not None:
            objects["scheduler"] = kwargs["lr_scheduler"]
        if trainer is not None:
            objects["hf_trainer"] = _TrainerState(trainer, self)
            handler = trainer.callback_handler.callbacks
            # right after the default flow: restore before any other callback's epoch end
            handler.remove(self)
            handler.insert(
                1 if handler and type(handler[0]).__name__ == "DefaultFlowCallback" else 0, self
            )
        elif self.driver.replay is not None:
            raise RuntimeError("the Trainer running this callback was not found")
        api.checkpointing(**{k: v for k, v in objects.items() if v is not None})
        self._epoch = 0

    # -- loops -------------------------------------------------------------------------------
    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        def begin() -> None:
            self.control = control
            self.driver.start_epoch(self._epoch)
            self._epoch += 1
            self._step = 0

        self._guard("on_epoch_begin", begin)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        driver = self.driver  # once per step: no closure, no guard call
        if driver.broken:
            return
        try:
            if driver.skip is not None and driver.epoch is not None:
                driver.begin_skip()
                control.should_epoch_stop = True  # tested after this step
                self._no_op_steps()
                return
            driver.start_step(self._step)
            self._step += 1
        except Exception as exc:  # a run never dies because retrolog failed (replay re-raises)
            driver.fail("on_step_begin", exc)

    def _no_op_steps(self) -> None:
        trainer = self.trainer
        if trainer is None or self._patched:
            return
        torch = sys.modules["torch"]
        device = trainer.args.device

        def training_step(*_args: Any, **_kwargs: Any) -> Any:
            return torch.zeros((), device=device)  # skipped: no forward, no backward

        trainer.training_step = training_step
        self._patched = True

    def _skipped_step_end(self, control: Any) -> None:
        if self.driver.skipping:  # the skipped step logs, evaluates and saves nothing
            control.should_log = control.should_evaluate = control.should_save = False
            control.should_training_stop = False
            control.should_epoch_stop = True

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.driver.skipping:
            self._skipped_step_end(control)

    def on_substep_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.driver.skipping:
            self._skipped_step_end(control)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        def end() -> None:
            self.control = control
            driver = self.driver
            if driver.skipping:
                if self._patched and self.trainer is not None:
                    self.trainer.__dict__.pop("training_step", None)
                    self._patched = False
                driver.end_skip()
                return
            driver.end_step_loop()

        self._guard("on_epoch_end", end)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        def record() -> None:
            if not logs:
                return
            if "train_runtime" in logs:  # the summary after the last epoch: the main loop ended
                self.driver.end_main()
            for name, value in logs.items():
                timed = not isinstance(name, str) or name.endswith(UNTIMED)
                if not timed and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.driver.log(name, value)

        self._guard("on_log", record)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._guard("on_train_end", self.driver.end_main)


# The epoch's last step leaves these in the Trainer's epoch function; its end-of-epoch log
# reports them, so a skipped epoch gets them back from the checkpoint.
EPOCH_LOCALS = ("grad_norm", "learning_rate")


def _epoch_frame() -> Any:
    """The frame of the Trainer's function that runs an epoch (it holds EPOCH_LOCALS)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name in ("_run_epoch", "_inner_training_loop") and all(
            name in frame.f_code.co_varnames for name in EPOCH_LOCALS
        ):
            return frame
        frame = frame.f_back  # type: ignore[assignment]
    return None


def _detached(value: Any) -> Any:
    return value.detach().cpu().clone() if hasattr(value, "detach") else value


def _write_frame_locals(frame: Any, values: dict[str, Any]) -> None:
    """Write local variables back into a running frame (what debuggers do; PEP 667 from 3.13)."""
    if sys.version_info >= (3, 13):
        for name, value in values.items():
            frame.f_locals[name] = value
        return
    import ctypes

    frame.f_locals.update(values)
    ctypes.pythonapi.PyFrame_LocalsToFast(ctypes.py_object(frame), ctypes.c_int(0))


def _find_trainer() -> Any:
    """The ``Trainer`` whose callback handler is calling us (callbacks are not given it)."""
    frame = sys._getframe(1)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, Trainer):
            return candidate
        frame = frame.f_back  # type: ignore[assignment]
    return None
