"""torch stays optional: the engine imports and works for numpy / plain Python without it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["torch"] = None  # any `import torch` now raises ImportError
    import random
    import numpy as np
    from retrolog.checkpoint import Checkpointer, load_manifest, restore
    from retrolog.objects import open_object_store

    class Box:
        def __init__(self): self.v = {"n": 1, "t": (1.5, None)}
        def __retrolog_state__(self): return self.v
        def __retrolog_restore__(self, state): self.v = state

    store = open_object_store(sys.argv[1])
    arr, cfg, box = np.arange(5.0), {"lr": 0.1, 3: [True]}, Box()
    random.seed(3); np.random.seed(3)
    with Checkpointer(store) as ckpt:
        digest = ckpt.save("k", {"arr": arr, "cfg": cfg, "box": box}).result().digest
    expected = (random.random(), np.random.rand())
    arr[:] = 0; cfg.clear(); box.v = None
    restore(store, load_manifest(store, digest), {"arr": arr, "cfg": cfg, "box": box})
    assert (random.random(), np.random.rand()) == expected
    assert arr.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0] and cfg == {"lr": 0.1, 3: [True]}
    assert box.v == {"n": 1, "t": (1.5, None)}
    assert set(load_manifest(store, digest).rng) == {"python", "numpy"}
    print("ok")
    """
)


def test_works_without_torch(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "objects")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_importing_the_engine_does_not_import_torch() -> None:
    code = (
        "import sys, retrolog.checkpoint, retrolog.objects; "
        "print('torch' in sys.modules, 'safetensors.torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]
