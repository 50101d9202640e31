"""Salt's contracts for the loader modules, checked on their source."""

import ast
import re

import pytest

from tests.conftest import REPO

LOADER_FILES = ["_modules/vmops.py", "_runners/vmops.py", "_states/vmops.py"]


def _public_functions(path):
    tree = ast.parse((REPO / path).read_text())
    return [n for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")]


@pytest.mark.parametrize("path", ["_modules/vmops.py", "_runners/vmops.py"])
def test_every_public_function_has_a_cli_example(path):
    missing = [
        f.name
        for f in _public_functions(path)
        if "CLI Example:" not in (ast.get_docstring(f) or "")
    ]
    assert not missing, "%s: no 'CLI Example:' in %s" % (path, missing)


@pytest.mark.parametrize("path", LOADER_FILES)
def test_every_parameter_is_named_in_its_docstring(path):
    """Salt's autodoc (``sys.doc``, ``salt-run -d``) shows the docstring: every parameter in it."""
    missing = {}
    for func in _public_functions(path):
        doc = ast.get_docstring(func) or ""
        params = [a.arg for a in func.args.args + func.args.kwonlyargs]
        absent = [p for p in params if not re.search(r"``%s\b" % re.escape(p), doc)]
        if absent:
            missing[func.name] = absent
    assert not missing, "%s: parameters not described: %s" % (path, missing)


@pytest.mark.parametrize("path", LOADER_FILES)
def test_every_public_function_is_documented_and_virtual_is_defined(path):
    functions = _public_functions(path)
    assert functions
    assert all(ast.get_docstring(f) for f in functions), path
    tree = ast.parse((REPO / path).read_text())
    assert any(isinstance(n, ast.FunctionDef) and n.name == "__virtual__" for n in tree.body)


def test_runners_never_return_a_top_level_data_key():
    # RunnerClient treats {"data": ...} as a state return and marks the job failed
    source = (REPO / "_runners/vmops.py").read_text()
    assert '"data":' not in source and "'data':" not in source


def test_every_event_tag_comes_from_the_catalogue_and_the_readme_lists_it():
    """Tags are built only by vmopslib/events.py; README "Events" has a row per tag."""
    import re

    from vmopslib import events

    literal = re.compile(
        r'"(?:replace|key|provision|create|rebuild|minion|ip|delete|expect|evacuate|server)/'
    )
    offenders = []
    for path in list((REPO / "_utils" / "vmopslib").glob("*.py")) + [
        REPO / "_runners" / "vmops.py",
        REPO / "_modules" / "vmops.py",
        REPO / "_states" / "vmops.py",
    ]:
        if path.name == "events.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if literal.search(line):
                offenders.append("%s:%d: %s" % (path.name, number, line.strip()))
    assert not offenders, offenders
    readme = (REPO / "README.md").read_text()
    for tag, _, _ in events.CATALOGUE:
        assert "| `%s` |" % tag in readme, tag
    with pytest.raises(ValueError, match="catalogue"):
        events.key("app2", "acepted")


def test_one_list_of_replacement_steps():
    """replace.STEPS is the order; the runner takes its steps from it; the orchestration
    runs them in that order."""
    import re

    from vmopslib import replace

    # the runner (vmops.replace_vm) and the orchestration's state (vmops.replace_step) both
    # dispatch through saltglue.replace_step
    glue = (REPO / "_utils" / "vmopslib" / "saltglue.py").read_text()
    assert "if step not in replace.RUNNER_STEPS:" in glue
    for step in replace.RUNNER_STEPS:
        assert '"%s": lambda' % step in glue, step
    assert "saltglue.replace_step(" in (REPO / "_runners" / "vmops.py").read_text()
    assert "saltglue.replace_step(" in (REPO / "_states" / "vmops.py").read_text()
    orch = (REPO / "orch" / "replace_vm.sls").read_text()
    orch = orch[orch.index("{%- else %}") :]  # the run (before it: the test=True plan)
    ran = [m.group(1) for m in re.finditer(r"step\('([a-z]+)'\)", orch)]
    ran = [s for s in ran if s != "rollback"]
    assert ran == list(replace.STEPS), ran
