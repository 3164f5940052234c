"""The public functions that the API reference shows, and the public methods of its public classes,
document every parameter and what they return (Google-style ``Args:`` / ``Returns:`` sections, or
NumPy-style ``Parameters`` / ``Returns``), so the generated reference is complete. A function or
method annotated ``-> None`` needs no ``Returns:`` section."""

import importlib
import inspect
import re

import pytest

#: Modules whose public functions (``__all__``) and the public methods of their public classes
#: must be fully documented.
MODULES = (
    "theory.gaussian",
    "theory.dro",
    "theory.frl",
    "theory.features",
    "sim.data",
    "sim.classifiers",
    "sim.mlp",
    "sim.evaluation",
    "sim.mitigation",
    "sim.coverage",
    "sim.features",
    "deep.data",
    "deep.models",
    "deep.checkpoint",
    "deep.attacks",
    "deep.metrics",
    "deep.objectives",
    "deep.methods",
    "deep.methods.base",
    "deep.methods.faal",
    "deep.methods.frl",
    "deep.methods.cfa",
    "deep.methods.wat",
    "deep.methods.dafa",
    "deep.awp",
)
#: Functions of command-line modules that the API reference shows.
FUNCTIONS = (
    "deep.evaluate.evaluate_model",
    "deep.evaluate.evaluate_cifar10c",
    "deep.evaluate.check_budget",
    "deep.evaluate.build_final_json",
    "deep.certify.certify",
    "deep.certify.predict",
    "deep.certify.certified_accuracy",
    "deep.certify.clopper_pearson_lower",
    "deep.certify.max_certifiable_radius",
)
SECTION = re.compile(r"^(Args|Arguments|Parameters|Returns|Yields|Raises|Examples?|Notes?):?$")


def public_functions():
    for name in MODULES:
        module = importlib.import_module(name)
        names = getattr(module, "__all__", [n for n in vars(module) if not n.startswith("_")])
        for attr in names:
            obj = getattr(module, attr)
            if inspect.isfunction(obj) and obj.__module__ == name:
                yield f"{name}.{attr}", obj
    for path in FUNCTIONS:
        module, _, attr = path.rpartition(".")
        yield path, getattr(importlib.import_module(module), attr)


def public_methods():
    """The methods defined on each public class of ``MODULES`` (``vars(cls)``): names not starting
    with ``_``, and ``__call__``; static and class methods included, properties not."""
    for name in MODULES:
        module = importlib.import_module(name)
        names = getattr(module, "__all__", [n for n in vars(module) if not n.startswith("_")])
        for attr in names:
            cls = getattr(module, attr)
            if not (inspect.isclass(cls) and cls.__module__ == name):
                continue
            for meth_name, meth in vars(cls).items():
                if meth_name.startswith("_") and meth_name != "__call__":
                    continue
                if isinstance(meth, (staticmethod, classmethod)):
                    meth = meth.__func__
                if inspect.isfunction(meth):
                    yield f"{name}.{attr}.{meth_name}", meth


def sections(doc: str) -> dict[str, str]:
    """``{section title: its text}`` of a cleaned docstring."""
    out, current = {}, None
    for line in doc.splitlines():
        match = SECTION.match(line.strip()) if not line.startswith(" ") else None
        if match:
            current = {"Arguments": "Args", "Parameters": "Args"}.get(match[1], match[1])
            out[current] = ""
        elif current and not set(line.strip()) <= {"-"}:
            out[current] += line + "\n"
    return out


def missing(func) -> list[str]:
    # the function's own docstring: a method inheriting its base's text may describe another rule
    doc = inspect.cleandoc(func.__doc__ or "")
    found = sections(doc)
    params = [
        p.name
        for p in inspect.signature(func).parameters.values()
        if p.name not in ("self", "cls") and p.kind is not p.VAR_KEYWORD
    ]
    problems = []
    if not doc:
        return ["no docstring"]
    if params:
        args = found.get("Args", "")
        problems += [f"parameter {p!r}" for p in params if not re.search(rf"\b{p}\b", args)]
    returns_none = inspect.signature(func).return_annotation in (None, "None")
    if "Returns" not in found and "Yields" not in found and not returns_none:
        problems.append("a Returns section")
    return problems


@pytest.mark.parametrize(
    "path, func",
    [pytest.param(path, func, id=path) for path, func in [*public_functions(), *public_methods()]],
)
def test_public_function_documents_parameters_and_returns(path, func):
    assert not missing(func), f"{path}'s docstring lacks: {', '.join(missing(func))}"


def test_the_check_sees_a_missing_parameter_and_section():
    def documented(a, b):
        """Sum.

        Args:
            a: one number.

        Raises:
            ValueError: never.
        """

    assert missing(documented) == ["parameter 'b'", "a Returns section"]

    def returns_nothing(a, b) -> None:
        """Store.

        Args:
            a: one number.
        """

    def returns_unannotated(a):
        """Store.

        Args:
            a: one number.
        """

    assert missing(returns_nothing) == ["parameter 'b'"]
    assert missing(returns_unannotated) == ["a Returns section"]
