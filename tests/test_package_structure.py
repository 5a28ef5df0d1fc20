"""The package's structure: no import cycles, no family named outside its own files, nothing
under backbones/ reaching into the checkout, and comments and help texts that state what is
(no issue numbers)."""
import ast
from pathlib import Path

import re

import pytest

from .conftest import ROOT

PACKAGE = ROOT / 'backbones'


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix('').parts)
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _imports(path: Path, modules: set) -> set:
    """Package modules that ``path`` imports anywhere (module level or inside functions)."""
    name = _module_name(path)
    package = name if path.name == '__init__.py' else name.rsplit('.', 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split('.')
            if node.level:
                base = base[:len(base) - node.level + 1]
                target = '.'.join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.add(target)
            found.update(f'{target}.{alias.name}' for alias in node.names)
    return {m for m in found if m in modules and m != name}


def test_no_import_cycles_counting_imports_inside_functions():
    files = sorted(PACKAGE.rglob('*.py'))
    modules = {_module_name(f) for f in files}
    graph = {_module_name(f): _imports(f, modules) for f in files}
    state, stack = {}, []

    def visit(node):
        state[node] = 'open'
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 'open':
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail('import cycle: ' + ' -> '.join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 'done'

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert len(graph) > 20


def _code_strings(path: Path):
    """String constants of a module that are not docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.value


def test_no_family_names_outside_the_families_files():
    """Generic code reaches families through the registry and their hooks only: no string of
    its code (docstrings aside) names a family or a variant."""
    family_files = {'edgevit.py', 'efficientformer_v2.py'}  # the models and their checkpoint layouts
    names = ('EdgeViT', 'EfficientFormerV2', 'edgevit', 'efficientformerv2')
    offenders = []
    for path in PACKAGE.rglob('*.py'):
        if path.name in family_files or path == PACKAGE / '__init__.py':
            continue
        for text in _code_strings(path):
            if text in names or any(text.startswith(f'{n}_') for n in names):
                offenders.append(f'{path.relative_to(ROOT)}: {text!r}')
    assert not offenders, offenders


def _comments_and_strings(path: Path):
    """(line, text) of every comment and string constant (docstrings and help texts included)
    of a Python file, or of every comment of a shell script."""
    text = path.read_text()
    if path.suffix == '.sh':
        for n, line in enumerate(text.splitlines(), 1):
            if '#' in line:
                yield n, line[line.index('#'):]
        return
    import io
    import tokenize
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type in (tokenize.COMMENT, tokenize.STRING):
            yield tok.start[0], tok.string


ISSUE_NUMBER = re.compile(r'(?i)\bissues?\s*#?\s*\d+|(?<![\w&$])#\d+\b')


def test_no_issue_numbers_in_comments_or_help_texts():
    """Code states what is; the history of why lives in git, not in the package or the tools."""
    offenders = []
    for folder in (ROOT / 'backbones', ROOT / 'tools'):
        for path in sorted(folder.rglob('*')):
            if path.suffix not in ('.py', '.sh'):
                continue
            for n, text in _comments_and_strings(path):
                if ISSUE_NUMBER.search(text):
                    offenders.append(f'{path.relative_to(ROOT)}:{n}: {ISSUE_NUMBER.search(text).group(0)!r}')
    assert not offenders, offenders


def test_the_issue_number_pattern_catches_what_it_should():
    assert ISSUE_NUMBER.search('# fixed for issue 11') and ISSUE_NUMBER.search('"""see #31"""')
    assert ISSUE_NUMBER.search('(Issue #4: goals)')
    assert not ISSUE_NUMBER.search('echo "$#" args; a &#32; b') and not ISSUE_NUMBER.search('# 11 issues')


def test_the_package_does_not_reach_into_the_checkout():
    """Nothing under backbones/ loads a file of tools/ or builds a path from the checkout's root
    (configs/, tools/): the package works installed, without the repository around it."""
    offenders = []
    for path in sorted(PACKAGE.rglob('*.py')):
        for text in _code_strings(path):
            if re.search(r"(^|/)(tools|configs)/[\w-]+\.(py|sh)$", text) or text in ('tools', 'configs'):
                offenders.append(f'{path.relative_to(ROOT)}: {text!r}')
        source = path.read_text()
        if 'dirname(osp.dirname(osp.dirname' in source:
            offenders.append(f'{path.relative_to(ROOT)}: climbs to the checkout root')
    assert not offenders, offenders
