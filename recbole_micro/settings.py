"""Settings checked at start-up against what the YAMLs allow, before any data is read.

Each default in ``properties/`` carries its type and allowed values in the comment beside it,
the one place they are declared::

    knn_k: 10                       # (int, >= 1) Neighbours kept per item ...
    lambda_coeff: 0.7               # (float, in [0, 1]) Skip-connection weight ...
    cl_reduce: mean                 # (str, one of: mean, sum) Over modalities ...
    cl_chunk_size: ~                # (int or empty, >= 1) Anchors per block ...

The part in parentheses is a type (``int``, ``float``, ``bool``, ``str``, ``list``, ``dict``),
``or empty`` when ``~`` is allowed, then at most one rule: ``>= x``, ``> x``, ``<= x``, ``< x``,
an interval ``in [a, b]`` (``(`` or ``)`` for an open end) or ``one of: a, b, c``.
"""
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from recbole_micro.errors import SettingsError

_KEY = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_]*):[^#]*#\s*(?P<comment>\(.*)$")
_SPEC = re.compile(
    r"^(?P<type>int|float|bool|str|list|dict)(?P<empty> or empty)?"
    r"(?:,\s*(?:(?P<op>>=|<=|>|<)\s*(?P<bound>\S+)"
    r"|in\s*(?P<lo_open>[\[(])\s*(?P<lo>[^,]+),\s*(?P<hi>[^\])]+)(?P<hi_open>[\])])"
    r"|one of:\s*(?P<choices>.+)))?$"
)
_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "list": (list,), "dict": (dict,)}


@dataclass(frozen=True)
class Setting:
    """What one key allows, and the YAML that declares it."""

    key: str
    type: str
    allow_empty: bool
    rule: str  # the rule as written, for messages ('' for none)
    source: Path
    check: Optional[callable] = None

    def problem(self, value):
        """None if ``value`` is allowed, else what is allowed (for the message)."""
        if self.rule.startswith("one of"):
            allowed = self.rule
        else:
            allowed = f"{'an' if self.type == 'int' else 'a'} {self.type}" + (f" {self.rule}" if self.rule else "")
        allowed += " or empty (~)" if self.allow_empty else ""
        if value is None:
            return None if self.allow_empty else allowed
        if isinstance(value, bool) and self.type != "bool":
            return allowed  # True is an int to Python, never to a setting
        if not isinstance(value, _TYPES[self.type]):
            return allowed
        if self.type == "float" and not math.isfinite(value):
            return allowed
        if self.check is not None and not self.check(value):
            return allowed
        return None


def _number(text):
    return float(text.strip())


def parse_spec(key, spec, source):
    """A :class:`Setting` from the text in parentheses, or None when it is not a spec."""
    match = _SPEC.match(spec.strip())
    if not match:
        return None
    check, rule = None, ""
    if match["op"]:
        bound, op = _number(match["bound"]), match["op"]
        check = {">=": lambda v: v >= bound, ">": lambda v: v > bound,
                 "<=": lambda v: v <= bound, "<": lambda v: v < bound}[op]
        rule = f"{op} {match['bound']}"
    elif match["lo"]:
        lo, hi = _number(match["lo"]), _number(match["hi"])
        lo_open, hi_open = match["lo_open"] == "(", match["hi_open"] == ")"
        check = lambda v: (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)  # noqa: E731
        rule = f"in {match['lo_open']}{match['lo'].strip()}, {match['hi'].strip()}{match['hi_open']}"
    elif match["choices"]:
        choices = [c.strip().strip("'\"") for c in match["choices"].split(",")]
        check = lambda v: v in choices  # noqa: E731
        rule = "one of " + ", ".join(repr(c) for c in choices)
    return Setting(key, match["type"], bool(match["empty"]), rule, Path(source), check)


def _leading_parenthesis(comment):
    """The text inside the comment's leading parentheses (brackets of intervals balanced), or None."""
    depth = 0
    for position, char in enumerate(comment):
        depth += char in "([" or -(char in ")]")
        if depth == 0:
            return comment[1:position]
    return None


def read_settings(yaml_files):
    """{key: Setting} from the top-level keys of ``yaml_files``; a later file's spec wins."""
    settings = {}
    for path in yaml_files:
        path = Path(path)
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            match = _KEY.match(line)
            spec = match and _leading_parenthesis(match["comment"])
            setting = spec and parse_spec(match["key"], spec, path)
            if setting:
                settings[match["key"]] = setting
    return settings


def check_settings(values, settings, root=None):
    """Raise :class:`SettingsError` naming the first key whose value its YAML does not allow.

    Args:
        values (dict): the final settings (key -> value).
        settings (dict): {key: Setting}, from :func:`read_settings`.
        root (Path): shown paths are relative to this folder's parent when below it.
    """
    for key, setting in settings.items():
        if key not in values:
            continue
        allowed = setting.problem(values[key])
        if allowed is not None:
            source = setting.source
            if root is not None and Path(root) in source.parents:
                source = source.relative_to(Path(root).parent)
            raise SettingsError(f"{key} is {values[key]!r}; allowed: {allowed} (the default is in {source}).")


# Set by the multi-process launcher, not by a YAML.
LAUNCH_KEYS = frozenset({"local_rank", "nproc", "world_size", "ip", "port", "offset"})


def yaml_keys(folders):
    """Every top-level key of the YAML files below ``folders`` (every model's and dataset's)."""
    keys = set()
    for folder in folders:
        for path in Path(folder).rglob("*.yaml"):
            for line in path.read_text(encoding="utf-8").splitlines():
                match = re.match(r"^([A-Za-z_][A-Za-z0-9_\-]*)\s*:", line)
                if match:
                    keys.add(match[1])
    return keys


def unknown_settings(user_keys, known):
    """[(key, the closest known name or None)] for each of ``user_keys`` that ``known`` lacks."""
    import difflib

    return [(key, next(iter(difflib.get_close_matches(key, known, n=1, cutoff=0.75)), None))
            for key in user_keys if key not in known and key not in LAUNCH_KEYS]
