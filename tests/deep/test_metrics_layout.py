"""The class-wise metric helpers live in ``deep.metrics``: training parts and methods use them
without importing the evaluator's command-line module, and the old import path still works."""

import subprocess
import sys

import deep.evaluate
import deep.metrics


def test_old_import_path_re_exports_the_same_functions():
    for name in ("classwise_accuracy", "frl_errors", "summarise_per_class"):
        assert getattr(deep.evaluate, name) is getattr(deep.metrics, name)


def test_parts_and_methods_do_not_import_the_evaluator():
    code = (
        "import sys\n"
        "import deep.distributed, deep.methods, deep.methods.frl, deep.weighting\n"
        "print(sorted(m for m in sys.modules if m == 'deep.evaluate'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
