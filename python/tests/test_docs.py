"""Every public name has a docstring and a stub; help(cc.open) explains with an example."""

import ast
import pathlib
import pydoc

import chunkcube as cc

PKG = pathlib.Path(cc.__file__).parent


def stub_names():
    tree = ast.parse((PKG / "__init__.pyi").read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names, tree


def test_every_public_name_is_documented_and_stubbed():
    names, tree = stub_names()
    for n in cc.__all__:
        assert n in names, f"{n} missing from __init__.pyi"
        if n != "__version__":
            assert (getattr(cc, n).__doc__ or "").strip(), f"{n} has no docstring"
    stub_classes = {c.name: {f.name for f in c.body if isinstance(f, ast.FunctionDef)} for c in tree.body if isinstance(c, ast.ClassDef)}
    for cls in ("DataArray", "Dataset", "Cube", "Graph"):
        public = {m for m in vars(getattr(cc, cls)) if not m.startswith("_")}
        assert public <= stub_classes[cls], f"{cls}: {public - stub_classes[cls]} not in the stubs"
        for m in public:
            obj = getattr(getattr(cc, cls), m)
            doc = obj.__doc__ if not isinstance(obj, property) else obj.fget.__doc__
            assert (doc or "").strip(), f"{cls}.{m} has no docstring"


def test_help_open_explains_with_an_example():
    text = pydoc.render_doc(cc.open, renderer=pydoc.plaintext)
    assert "s3://bucket/prefix" in text and "Example" in text and "cc.open(" in text
