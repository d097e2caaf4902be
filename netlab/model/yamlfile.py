"""YAML read as strictly as the schema reads what it holds: UTF-8 only, no key given twice, bounded size, nesting
and alias expansion, so that any file is accepted or refused quickly and with a message naming the problem.

libyaml (PyYAML's C parser) does the parsing and refuses deep nesting itself; keys are checked as each mapping is
built. Aliases share the object they point to; how many values they expand to is counted once per object, before
anything (pydantic, an error message) walks the expanded tree.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_BYTES = 256 * 1024  # PyYAML builds ~0.5 MB/s of scenario; the largest shipped scenario is under 10 kB
MAX_VALUES = 100_000  # values after alias expansion


class YamlProblem(ValueError):
    """Why a file is refused, in words for the user."""


class _Loader(yaml.CSafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: the constructor says so
                continue
            if first is not key_node:
                lines = f"lines {first.start_mark.line + 1} and {key_node.start_mark.line + 1}"
                raise YamlProblem(f"key {key!r} is given twice ({lines}); YAML keeps only the last, so remove or "
                                  "rename one")
        return super().construct_mapping(node, deep=deep)


def load_documents(data: bytes, name: str) -> list[Any]:
    """Every YAML document of `data` (empty ones dropped). YamlProblem for anything refused."""
    if len(data) > MAX_BYTES:
        raise YamlProblem(f"{name} is larger than {MAX_BYTES // 1024} KiB, the most netlab reads from a scenario or "
                          "manifest file (a lab of hundreds of pods fits in a few dozen)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise YamlProblem(f"{name} is not UTF-8 text (byte {err.start}: 0x{data[err.start]:02x}); save it as "
                          "UTF-8") from None
    try:
        documents = [doc for doc in yaml.load_all(text, Loader=_Loader) if doc is not None]
    except yaml.YAMLError as err:
        raise YamlProblem(f"{name}: not valid YAML: {_short(str(err))}") from None
    except YamlProblem as problem:
        raise YamlProblem(f"{name}: {problem}") from None
    except RecursionError:
        raise YamlProblem(f"{name}: nested too deeply for a scenario") from None
    count = _values(documents)
    if count > MAX_VALUES:
        raise YamlProblem(f"{name}: its anchors and aliases expand to more than {MAX_VALUES} values "
                          "(a 'billion laughs' file?); write the values out or use fewer aliases")
    return documents


def _values(root: Any) -> int:
    """Values in the tree with aliases expanded, each shared object counted once (memo by identity)."""
    sizes: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        value, done = stack.pop()
        if not isinstance(value, (list, dict)) or (id(value) in sizes and not done):
            continue
        children = list(value.values()) if isinstance(value, dict) else value
        if done:
            sizes[id(value)] = min(MAX_VALUES + 1, len(children) + sum(
                sizes.get(id(c), 0) for c in children if isinstance(c, (list, dict))))
            continue
        stack.append((value, True))
        stack += [(c, False) for c in children if isinstance(c, (list, dict)) and id(c) not in sizes]
    return sizes.get(id(root), 0)


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + " …"
