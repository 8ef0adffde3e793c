# Overrides the module-level config of train.py from the command line:
#   python train.py --learning_rate=1e-3 --seed=2
# Executed with exec() inside train.py, so it sees and rebinds train.py's globals.
import sys
from ast import literal_eval

for _arg in sys.argv[1:]:
    assert _arg.startswith("--") and "=" in _arg, f"expected --key=value, got {_arg!r}"
    _key, _raw = _arg[2:].split("=", 1)
    assert _key in globals(), f"unknown config key {_key!r}"
    try:
        _value = literal_eval(_raw)
    except (SyntaxError, ValueError):
        _value = _raw
    assert type(_value) is type(globals()[_key]), f"{_key}: {type(_value)} given"
    globals()[_key] = _value
