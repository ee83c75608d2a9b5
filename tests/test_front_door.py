"""What a newcomer meets first: inspect's text, optional extras that say how to install them,
scripts whose --help works without their extra, and commands that write under engines/."""

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hilo_export.cli import main
from hilo_export.errors import HiLoError, install_hint, require

ROOT = Path(__file__).resolve().parents[1]


def test_describe_is_the_inspect_text(built):
    from hilo_export.folder.describe import describe

    text = describe(built)
    lines = text.splitlines()
    assert lines[0].startswith(f"{built}: tiny-flux (FluxTransformer2DModel")
    assert "grid 12x20" in lines[1] and "fp32" in lines[1]
    assert lines[2].startswith("  backend ort ")
    assert [line.split()[0] for line in lines if line.startswith("  ") and line.split()[0] in ("s", "m", "l", "full")] == \
        ["s", "m", "l", "full"]
    assert lines[-1].startswith("  inputs:  hidden_states float32")
    result = CliRunner().invoke(main, ["inspect", str(built)])
    assert result.exit_code == 0 and result.output == text + "\n"


class ExampleError(HiLoError, RuntimeError):
    pass


def test_require_names_the_extra_to_install():
    assert require("json", ExampleError, "unused").dumps([1]) == "[1]"
    with pytest.raises(ExampleError, match=r"plots need the eval extra: pip install 'hilo-export\[eval\]' \(import "):
        require("no_such_module_here", ExampleError, f"plots need the eval extra: {install_hint('eval')}")
    assert "hilo-export[cpu]" in install_hint("ort") and "hilo-export[gpu]" in install_hint("ort")


def test_a_missing_onnxruntime_is_one_clear_error(monkeypatch):
    from hilo_export.folder.backends import BackendError, get_backend

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(BackendError, match=r"pip install 'hilo-export\[cpu\]'.*'hilo-export\[gpu\]'"):
        get_backend("ort")


def test_the_eval_extra_is_imported_only_where_it_is_used():
    # validate's module loads without polygraphy; running it says which extra to install
    code = ("import sys; sys.modules['polygraphy'] = None\n"
            "import hilo_export.evaluation.validate as v\n"
            "from hilo_export.evaluation.errors import EvaluationError, require_eval\n"
            "try:\n    require_eval('polygraphy.comparator', 'validate')\n"
            "except EvaluationError as err:\n    print(err)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("validate needs the eval extra: pip install 'hilo-export[eval]'")


def _run_without_tritonclient(*args):
    code = ("import runpy, sys; sys.modules['tritonclient'] = None; sys.modules['tritonclient.http'] = None\n"
            f"sys.argv = ['triton_client.py', *{list(args)!r}]\n"
            f"runpy.run_path({str(ROOT / 'scripts' / 'triton_client.py')!r}, run_name='__main__')\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_triton_client_help_needs_no_serving_extra():
    shown = _run_without_tritonclient("--help")
    assert shown.returncode == 0 and "usage: triton_client.py" in shown.stdout and "Traceback" not in shown.stderr
    run = _run_without_tritonclient("--image", "i.png", "--mask", "m.png", "--random")
    assert run.returncode == 1 and "pip install 'hilo-export[serving]'" in run.stderr and "Traceback" not in run.stderr


def test_default_outputs_go_under_engines():
    from hilo_export.cli import masks

    defaults = {p.name: p.default for p in masks.params}
    assert Path(defaults["out_dir"]).parts[0] == "engines"
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "/engines/*" in ignored


def test_quiet_loading_restores_the_progress_bars():
    from diffusers.utils import logging as diffusers_logging

    from hilo_export.model.loading import quiet_loading

    assert diffusers_logging.is_progress_bar_enabled()
    with quiet_loading():
        assert not diffusers_logging.is_progress_bar_enabled()
    assert diffusers_logging.is_progress_bar_enabled()


def test_readme_and_docs_links_exist():
    # every relative link of the README and the docs pages points at a file or folder of the checkout
    import re

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    missing = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            path = (page.parent / target).resolve()
            if not path.exists():
                missing.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not missing, "broken links:\n" + "\n".join(missing)
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300


def test_the_core_install_imports_every_command_without_an_extra():
    # as with pip install -e '.[cpu]' alone: no eval, serving, fill or train extra (peft comes with train)
    code = ("import sys\n"
            "for m in ('matplotlib', 'skimage', 'polygraphy', 'tritonclient', 'transformers', 'sklearn', 'peft'):\n"
            "    sys.modules[m] = None\n"
            "import hilo_export.cli, hilo_export.evaluation.edit, hilo_export.evaluation.fill_edit\n"
            "import hilo_export.evaluation.validate, hilo_export.export.builder, hilo_export.serving.repository\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
