"""Where a line runs in code whose loops a framework owns (replay's planner; syntax trees only).

A Lightning or Hugging Face script has no ``for ... in retrolog.loop(...)``: the callback records
the loops ``epoch`` and ``step`` from the framework's hooks. The user's code is reached through
those hooks, so the hook a line is in (directly, or through the functions that call it) decides
its level: ``training_step`` and the batch hooks run per step (``inner``), the epoch-end and
validation hooks once per epoch (``outer``), ``configure_optimizers`` and ``on_fit_start``
before the loop (``prefix``), ``on_train_end`` after it (``suffix``). At module level (and in the
function that starts training) the call that starts training (``trainer.fit(...)``,
``trainer.train(...)``) plays the main loop's part: lines before it are ``prefix``, after it
``suffix``. Anything else takes its callers' levels (``layout.Levels``).
"""

from __future__ import annotations

import ast

from ..replaying.layout import FunctionNode, Levels, Located, ProjectCode, Reach

MAIN, NESTED = "epoch", "step"
INNER = Reach("inner", loops=frozenset({NESTED}))
OUTER = Reach("outer")
PREFIX = Reach("prefix")
SUFFIX = Reach("suffix")

LIGHTNING_HOOKS: dict[str, Reach] = {
    **dict.fromkeys(
        (
            "training_step",
            "on_train_batch_start",
            "on_train_batch_end",
            "on_before_backward",
            "on_after_backward",
            "on_before_optimizer_step",
            "on_before_zero_grad",
            "optimizer_step",
            "optimizer_zero_grad",
            "backward",
            "lr_scheduler_step",
            "on_before_batch_transfer",
            "transfer_batch_to_device",
            "on_after_batch_transfer",
        ),
        INNER,
    ),
    **dict.fromkeys(
        (
            "on_train_epoch_start",
            "on_train_epoch_end",
            "validation_step",
            "on_validation_start",
            "on_validation_end",
            "on_validation_epoch_start",
            "on_validation_epoch_end",
            "on_validation_batch_start",
            "on_validation_batch_end",
            "on_validation_model_eval",
            "on_validation_model_train",
            "on_validation_model_zero_grad",
        ),
        OUTER,
    ),
    **dict.fromkeys(
        (
            "setup",
            "prepare_data",
            "configure_model",
            "configure_optimizers",
            "configure_callbacks",
            "train_dataloader",
            "val_dataloader",
            "on_fit_start",
            "on_train_start",
            "on_sanity_check_start",
            "on_sanity_check_end",
        ),
        PREFIX,
    ),
    **dict.fromkeys(
        (
            "on_train_end",
            "on_fit_end",
            "teardown",
            "test_step",
            "predict_step",
            "on_test_epoch_end",
            "test_dataloader",
            "predict_dataloader",
        ),
        SUFFIX,
    ),
}

TRANSFORMERS_HOOKS: dict[str, Reach] = {
    **dict.fromkeys(
        (
            "training_step",
            "compute_loss",
            "on_step_begin",
            "on_step_end",
            "on_substep_end",
            "on_pre_optimizer_step",
            "on_optimizer_step",
            "on_log",
            "on_save",
        ),
        INNER,
    ),
    **dict.fromkeys(
        (
            "on_epoch_begin",
            "on_epoch_end",
            "on_evaluate",
            "evaluate",
            "prediction_step",
            "compute_metrics",
        ),
        OUTER,
    ),
    **dict.fromkeys(("on_init_end", "on_train_begin", "create_optimizer"), PREFIX),
    **dict.fromkeys(("on_train_end",), SUFFIX),
}

FRAMEWORKS = {
    "retrolog.lightning": (LIGHTNING_HOOKS, "fit"),
    "retrolog.transformers": (TRANSFORMERS_HOOKS, "train"),
}
# functions (not methods) the framework calls by a name the user passes (compute_metrics=...)
FREE_FUNCTIONS = frozenset({"compute_metrics"})


def frameworks_used(code: ProjectCode) -> list[str]:
    """The integrations the project's code imports (``retrolog.lightning``, ...)."""
    found: dict[str, None] = {}
    for module in code.modules.values():
        for node in ast.walk(module.tree):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name in FRAMEWORKS:
                    found[name] = None
    return list(found)


def _start_call(code: ProjectCode, methods: set[str]) -> Located | None:
    """The statement of the entry script (or a function) that starts training: a call of
    ``.fit(...)``/``.train(...)`` on something, preferring the entry script; as a ``Located``
    whose ``node`` spans that statement."""
    for path, module in sorted(code.modules.items(), key=lambda kv: kv[0] != code.entry):
        for stmt, parents, function in _statements(module.tree):
            for node in ast.walk(stmt):
                if not (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in methods
                ):
                    continue
                # model.train() takes no argument; trainer.fit(model, ...) and trainer.train() do
                if node.args or node.keywords or _named_trainer(node.func.value):
                    return Located(path, MAIN, stmt, parents, function)  # type: ignore[arg-type]
    return None


def _named_trainer(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and "trainer" in node.id.lower()


def _statements(
    tree: ast.Module,
) -> list[tuple[ast.stmt, list[ast.AST], FunctionNode | None]]:
    """Simple statements (not compound ones) with their enclosing nodes and function, in order."""
    out: list[tuple[ast.stmt, list[ast.AST], FunctionNode | None]] = []

    def visit(node: ast.AST, parents: list[ast.AST], function: FunctionNode | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                continue
            inner = (
                child if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            )
            if isinstance(child, ast.stmt) and not hasattr(child, "body"):
                out.append((child, parents, function))
            visit(child, [*parents, child], inner)

    visit(tree, [], None)
    return out


class FrameworkLevels(Levels):
    """``Levels`` where framework hooks have fixed levels and training's start is the anchor."""

    def __init__(self, code: ProjectCode, hooks: dict[str, Reach], start: Located | None) -> None:
        self.hooks = hooks
        super().__init__(code, start, [])

    def reach(self, path: str, line: int) -> Reach:
        if self.main is None:
            return Reach("full", why="the call that starts training was not found")
        function = self.code.function_at(path, line)
        main = self.main
        if function is main.function and path == main.path:
            node = main.node
            if node.lineno <= line <= (node.end_lineno or node.lineno):
                return Reach("prefix", why="in the statement that starts training (its arguments)")
        return super().reach(path, line)

    def _function_reach(self, path: str, function: FunctionNode) -> Reach:
        module = self.code.modules.get(path)
        in_class = module is not None and id(function) in module.in_class
        fixed = self.hooks.get(function.name)
        if fixed is not None and (in_class or function.name in FREE_FUNCTIONS):
            return fixed
        return super()._function_reach(path, function)


def framework_levels(code: ProjectCode, main_loop: str | None) -> FrameworkLevels | None:
    """Levels for a version whose runs recorded ``epoch`` through an integration's callback;
    None when the code imports no integration (or the main loop has another name)."""
    if main_loop != MAIN:
        return None
    used = frameworks_used(code)
    if not used:
        return None
    hooks: dict[str, Reach] = {}
    methods: set[str] = set()
    for name in used:
        table, method = FRAMEWORKS[name]
        hooks.update(table)
        methods.add(method)
    return FrameworkLevels(code, hooks, _start_call(code, methods))
