"""House rules the package keeps (STYLE §11): no function takes more than 8 parameters (a small dataclass
instead); the entry points stay thin."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_PARAMETERS = 8


def test_code_shape_no_function_takes_more_than_eight_parameters() -> None:
    wide = []
    for path in sorted((REPO / "snps3_ds").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args
                names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs if a.arg not in ("self", "cls")]
                if len(names) > MAX_PARAMETERS:
                    wide.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}({len(names)} parameters)")
    assert not wide, "functions with more than 8 parameters (group them in a dataclass):\n" + "\n".join(wide)
