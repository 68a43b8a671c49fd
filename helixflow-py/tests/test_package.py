"""The installed package: typing markers and stubs ship inside it, every public name is
documented, and the stubs of `_engine` list exactly the options `_engine.py` accepts."""

import ast
import inspect
import re
from pathlib import Path
from typing import Dict, List, Set

import pytest

import helixflow
from helixflow import _engine

PACKAGE = Path(helixflow.__file__).parent


@pytest.mark.parametrize("name", ["py.typed", "_engine.pyi", "_native.pyi"])
def test_typing_files_are_installed_in_the_package(name):
    assert (PACKAGE / name).is_file()


def test_the_version_is_a_string():
    assert isinstance(helixflow.__version__, str)
    assert re.match(r"\d+\.\d+", helixflow.__version__)


def test_every_public_name_exists_and_is_documented():
    for name in helixflow.__all__:
        value = getattr(helixflow, name)
        if name in ("__version__", "DEFAULT_MODEL"):
            continue
        assert (value.__doc__ or "").strip(), f"{name} has no docstring"


def test_every_public_method_is_documented():
    for cls in (helixflow.Engine, helixflow.Stream, helixflow.AsyncStream):
        for name, member in vars(cls).items():
            if name.startswith("_") or not callable(getattr(member, "fget", member)):
                continue
            assert inspect.getdoc(member), f"{cls.__name__}.{name} has no docstring"


def stub() -> ast.Module:
    return ast.parse((PACKAGE / "_engine.pyi").read_text(encoding="utf-8"))


def stub_class(name: str) -> ast.ClassDef:
    [cls] = [n for n in stub().body if isinstance(n, ast.ClassDef) and n.name == name]
    return cls


def typed_dict_keys(module: ast.Module, name: str) -> Set[str]:
    """The keys of TypedDict `name` in the stub, its bases' included."""
    [cls] = [n for n in module.body if isinstance(n, ast.ClassDef) and n.name == name]
    keys = {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    for base in cls.bases:
        if isinstance(base, ast.Name) and base.id != "TypedDict":
            keys |= typed_dict_keys(module, base.id)
    return keys


def keyword_options(module: ast.Module, cls: ast.ClassDef) -> Dict[str, List[Set[str]]]:
    """Each method's keyword options, one set per definition (overload): its keyword-only
    parameters and the keys of the TypedDict its `**options: Unpack[...]` names."""
    methods: Dict[str, List[Set[str]]] = {}
    for node in cls.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names = {a.arg for a in node.args.kwonlyargs}
            kwargs = node.args.kwarg
            if kwargs is not None:
                annotation = kwargs.annotation
                assert isinstance(annotation, ast.Subscript), ast.dump(kwargs)
                assert isinstance(annotation.value, ast.Name) and annotation.value.id == "Unpack"
                assert isinstance(annotation.slice, ast.Name)
                names |= typed_dict_keys(module, annotation.slice.id)
            methods.setdefault(node.name, []).append(names)
    return methods


def test_the_engine_stub_takes_exactly_the_accepted_options():
    methods = keyword_options(stub(), stub_class("Engine"))
    expected = {
        "__init__": _engine._ENGINE_OPTIONS,
        "chat": _engine._CHAT_OPTIONS,
        "achat": _engine._CHAT_OPTIONS,
        "complete": _engine._COMPLETION_OPTIONS,
        "acomplete": _engine._COMPLETION_OPTIONS,
    }
    for method, options in expected.items():
        assert methods[method], method
        for overload in methods[method]:
            assert overload == set(options), method


def test_the_stubs_declare_every_public_name():
    module = stub()
    declared = {n.name for n in module.body if isinstance(n, ast.ClassDef)}
    declared |= {n.target.id for n in module.body
                 if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    assert set(_engine.__all__) <= declared
    for cls in (helixflow.Engine, helixflow.Stream, helixflow.AsyncStream):
        in_stub = {n.name for n in stub_class(cls.__name__).body
                   if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        public = {name for name in vars(cls) if not name.startswith("_")}
        assert public <= in_stub, cls.__name__
