"""Imports point one way: cli -> commands (hilserl, compare, calibrate) -> datasets -> the leader arm
and reward classification -> control -> (perception, policy, sim, hardware) -> the base modules (spec,
interfaces, kinematics, observation, geometry, ...). A module may import its own package and any
lower layer; packages of one layer never import each other."""

import ast
from pathlib import Path

import so101_sim2real

ROOT = Path(so101_sim2real.__file__).parent
LAYERS = [
    {"errors", "arm", "spec", "interfaces", "simulator", "kinematics", "observation", "safe_pickle", "cameras",
     "specs", "files", "devices", "geometry", "records", "machine", "scheduling", "__init__"},
    {"perception", "policy", "sim", "hardware"},
    {"control"},
    {"reward", "leader"},
    {"datasets"},
    {"hilserl", "compare", "calibrate"},
    {"cli"},
    {"__main__"},
]


def layer_of(unit: str) -> int:
    return next(i for i, units in enumerate(LAYERS) if unit in units)


def unit_of(module: str) -> str:
    return module.split(".")[1] if "." in module else "__init__"


def imports() -> list[tuple[str, str, str]]:
    """(file, importing unit, imported unit) for every import of the package inside it."""
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        unit = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                if name == "so101_sim2real" and isinstance(node, ast.ImportFrom):  # from so101_sim2real import arm
                    out += [(str(rel), unit, a.name) for a in node.names]
                elif name.startswith("so101_sim2real."):
                    out.append((str(rel), unit, unit_of(name)))
    return out


def wrong_way(edges: list[tuple[str, str, str]]) -> list[str]:
    bad = []
    for file, src, dst in edges:
        if src == dst:
            continue
        a, b = layer_of(src), layer_of(dst)
        if b > a or (a == b and a != 0):  # up, or sideways between packages of one layer
            bad.append(f"{file}: {src} imports {dst}")
    return bad


def test_every_module_is_in_a_layer():
    units = {p.relative_to(ROOT).parts[0].removesuffix(".py") for p in ROOT.rglob("*.py")}
    assert units - set().union(*LAYERS) == set()


def test_imports_point_down():
    assert wrong_way(imports()) == []


def test_the_check_sees_an_import_going_up():
    assert wrong_way([("sim/x.py", "sim", "control")]) == ["sim/x.py: sim imports control"]
    assert wrong_way([("hardware/x.py", "hardware", "policy")]) == ["hardware/x.py: hardware imports policy"]


def hidden_cycles() -> list[str]:
    """Pairs of modules of one package that import each other, one side (at least) from inside a
    function or an ``if TYPE_CHECKING:`` block to dodge the cycle. Imports inside functions that
    only defer a heavy library are fine: this sees the package's own modules only."""
    top: dict[str, set[str]] = {}
    inner: dict[str, set[str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        module = ".".join(("so101_sim2real", *path.relative_to(ROOT).with_suffix("").parts))
        top[module], inner[module] = set(), set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("so101_sim2real"):
                (top if node.col_offset == 0 else inner)[module].add(node.module)
    return [f"{a} <-> {b}" for a in top for b in sorted(inner[a])
            if b in top and (a in top[b] or a in inner[b]) and a.split(".")[1] == b.split(".")[1]]


def test_no_import_cycle_is_hidden_inside_a_function():
    """Imports within a package go one way: what two modules share lives in the lower one (or a
    small module both import), not behind an import inside a function."""
    assert hidden_cycles() == []


def test_library_errors_name_options_not_flags():
    """Outside cli/, a message names an option as @name; the CLI shows it as --name. Command lines
    quoted as examples ('so101 ... --flag') and docstrings are fine."""
    import io
    import re
    import tokenize

    found = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] == "cli":
            continue
        for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
            text = tok.string.lstrip("rbfuRBFU")
            if tok.type != tokenize.STRING or text.startswith(('"""', "'''")):
                continue
            examples = re.sub(r"['`]so101 [^'`]*(['`]|$)", "", text)
            if re.search(r"--[a-z]", examples):
                found.append(f"{rel}:{tok.start[0]}: {text[:60]}")
    assert found == []


def test_an_option_reads_plain_in_the_library_and_as_a_flag_on_the_command_line():
    from so101_sim2real.errors import So101Error

    exc = So101Error("@max_steps must be at least 1 (robot@host and a/@b stay)")
    assert str(exc) == "max_steps must be at least 1 (robot@host and a/@b stay)"
    assert exc.cli_text() == "--max-steps must be at least 1 (robot@host and a/@b stay)"


def test_the_readmes_layout_names_every_package_and_module():
    """The README's Layout section is drawn from the code: a module added or renamed shows here."""
    text = (ROOT.parents[1] / "README.md").read_text()
    layout = text[text.index("## Layout"):]
    missing = [str(p.relative_to(ROOT)) for p in sorted(ROOT.rglob("*.py"))
               if p.name not in ("__init__.py", "__main__.py") and f"`{p.name}`" not in layout]
    missing += [f"{p.name}/" for p in sorted(ROOT.iterdir()) if (p / "__init__.py").is_file() and p.name != "specs"
                and f"`{p.name}/`" not in layout]
    assert missing == []
