"""Reading the YAML files users write (build files, ``--config`` files, evaluation task descriptors): PyYAML's safe
loader, except that a key written twice in one mapping is an error naming it and its line. PyYAML keeps the last
one silently, so a second ``extract:`` stage or a repeated option would quietly replace the first."""

from __future__ import annotations

from typing import Any

import yaml

from .errors import CmtpError


class _UniqueKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:  # the keys as written (merged ``<<`` keys may be overridden)
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"{key_node.value!r} is written twice in "
                                                            "one mapping", key_node.start_mark)
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)


def load_yaml(stream, name: str) -> Any:
    """``yaml.safe_load`` that refuses a repeated key; a file that is not valid YAML is one error line naming
    ``name`` and where the problem is."""
    try:
        return yaml.load(stream, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise CmtpError(f"{name}: not valid YAML: {exc.context + ', ' if exc.context else ''}{exc.problem}{where}") \
            from None
    except yaml.YAMLError as exc:
        raise CmtpError(f"{name}: not valid YAML: {' '.join(str(exc).split())}") from None
