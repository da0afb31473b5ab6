"""The library must run on a bare GPU machine: no mlflow, prefect or dvc anywhere in `unlearning`."""

import subprocess
import sys


def test_library_imports_no_tracking_stack() -> None:
    code = (
        "import sys, pkgutil, importlib, unlearning\n"
        "for m in pkgutil.walk_packages(unlearning.__path__, 'unlearning.'):\n"
        "    if not m.name.endswith('__main__'): importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('mlflow', 'prefect', 'dvc'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"unlearning imported: {out.stdout.strip()}"


def test_optuna_is_imported_by_the_calibration_search_only() -> None:
    """A bare GPU machine without optuna still imports every module; only `calibrate` needs it."""
    code = (
        "import sys, pkgutil, importlib\n"
        "sys.modules['optuna'] = None  # as if it were not installed\n"
        "import unlearning\n"
        "for m in pkgutil.walk_packages(unlearning.__path__, 'unlearning.'):\n"
        "    if not m.name.endswith('__main__'): importlib.import_module(m.name)\n"
        "from unlearning.calibration.search import require_optuna\n"
        "try:\n"
        "    require_optuna()\n"
        "except ImportError as err:\n"
        "    print(err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'optuna>=5,<6'" in out.stdout
