#!/usr/bin/env python3
"""Offline check of a Grafana dashboard against the series ca-server exports.

    check_dashboard.py [DASHBOARD.json] [--source ca-server/src/metrics.rs] [--list]

Default dashboard: deploy/grafana/ca-server-dashboard.json. Checks:

* the file is JSON, a dashboard with panels;
* panel ids are unique (rows' nested panels included);
* a `datasource` template variable of type prometheus exists, and every panel (rows excepted),
  every target and every query variable uses it (`${datasource}` or `$datasource`);
* every `$variable` an expression uses is a template variable or a Grafana built-in;
* every metric name in every target expression and query variable is one ca-server exports, or
  `up` and the other series Prometheus itself adds to each scrape. The exported names are read
  from the source, not listed here: the string literals given to `Registry::register` (the
  event metrics) and to `DescriptorEncoder::encode_descriptor` (the scrape-time state), with the
  suffixes prometheus-client writes: counters `_total`, histograms `_bucket`, `_count`, `_sum`,
  info `_info`;
* rate(), irate() and increase() are applied only to counters and to the event histograms, never
  to gauges or to the scrape-time (snapshot) histograms;
* with promtool on PATH: every expression parses as PromQL (`promtool check rules` on a temporary
  rules file with one recording rule per expression, Grafana variables substituted). Stable
  promtool has no expression-only checker (`promtool query` needs a server; upstream's
  `promql format` is experimental and missing from e.g. Debian's 2.42), so rules are the offline
  way; without promtool the step is reported as skipped, never passed silently.

Problems go to stderr naming the panel; the exit status is 1 if there is any. Standard library only.
"""
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_DASHBOARD = ROOT / "deploy" / "grafana" / "ca-server-dashboard.json"
DEFAULT_SOURCE = ROOT / "ca-server" / "src" / "metrics.rs"

# Series Prometheus adds to every scrape target (not ca-server's, but always there to query).
SCRAPE_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
                 "scrape_samples_post_metric_relabeling", "scrape_series_added"}

# PromQL (Prometheus 2.x/3.x) functions and aggregation operators, and keywords.
FUNCTIONS = set("""
abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes clamp
clamp_max clamp_min cos cosh count_over_time days_in_month day_of_month day_of_week day_of_year deg
delta deriv double_exponential_smoothing exp floor histogram_avg histogram_count histogram_fraction
histogram_quantile histogram_stddev histogram_stdvar histogram_sum holt_winters hour idelta increase
info irate label_join label_replace last_over_time ln log10 log2 mad_over_time max_over_time
min_over_time minute month pi predict_linear present_over_time quantile_over_time rad rate resets
round scalar sgn sin sinh sort sort_by_label sort_by_label_desc sort_desc sqrt stddev_over_time
stdvar_over_time sum_over_time tan tanh time timestamp vector year start end
""".split())
AGGREGATIONS = set("sum min max avg group stddev stdvar count count_values bottomk topk quantile "
                   "limitk limit_ratio".split())
KEYWORDS = set("and or unless by without on ignoring group_left group_right offset bool atan2 "
               "inf nan".split())
GRAFANA_BUILTINS = {"__interval", "__interval_ms", "__rate_interval", "__range", "__range_s",
                    "__range_ms", "__from", "__to", "__dashboard", "__org", "__user", "__name",
                    "timeFilter", "__timeFilter"}
# What the promtool step substitutes for Grafana's interval variables.
DURATION_VARS = {"__interval": "1m", "__rate_interval": "2m", "__range": "1h"}
RATE_FUNCTIONS = {"rate", "irate", "increase"}

IDENT = r"[A-Za-z_:][A-Za-z0-9_:]*"


class SourceError(Exception):
    pass


# --- the exported names, from metrics.rs -----------------------------------------------------

def strip_rust_comments(text):
    """Blank out // and /* */ comments, keeping string and char literals (and line numbers)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:]) and not re.match(r"[A-Za-z0-9_]", text[i - 1:i] or " "):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            end = n if end < 0 else end + 1 + len(hashes)
            out.append(text[i:end])
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif c == "'":
            m = re.match(r"'(\\.[^']*|[^\\'])'", text[i:])  # a char literal, else a lifetime
            if m:
                out.append(m.group(0))
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def split_args(text, start):
    """Top-level comma-separated arguments of the call whose `(` is at text[start]."""
    assert text[start] == "("
    depth, args, cur, i = 0, [], [], start
    pairs = {"(": ")", "[": "]", "{": "}"}
    closing = set(pairs.values())
    while i < len(text):
        c = text[i]
        if c == '"':
            j = i + 1
            while j < len(text) and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            cur.append(text[i:j + 1])
            i = j + 1
            continue
        if c in pairs:
            depth += 1
            if depth == 1:
                i += 1
                continue
        elif c in closing:
            depth -= 1
            if depth == 0:
                args.append("".join(cur).strip())
                return [a for a in args if a], i  # a trailing comma leaves an empty one
        elif c == "," and depth == 1:
            args.append("".join(cur).strip())
            cur = []
            i += 1
            continue
        cur.append(c)
        i += 1
    raise SourceError(f"unbalanced call at offset {start}")


def string_literal(arg):
    m = re.fullmatch(r'"((?:[^"\\]|\\.)*)"', arg.strip())
    return m.group(1) if m else None


def line_of(text, pos):
    return text.count("\n", 0, pos) + 1


def kind_of_expression(expr):
    """Counter, Histogram, Gauge or Info from a prometheus-client constructor expression."""
    kinds = set(re.findall(r"\b(Counter|Histogram|Gauge|Info|Summary)\b", expr))
    return kinds.pop() if len(kinds) == 1 else None


def resolve_let(text, before, ident):
    """The initializer (with its type annotation) of the last `let ident = …;` before `before`."""
    found = None
    for m in re.finditer(r"\blet\s+(?:mut\s+)?" + re.escape(ident) + r"\b([^=]*)=", text[:before]):
        found = m
    if not found:
        return None
    end = text.find(";", found.end())
    return found.group(1) + text[found.end():end]


def resolve_loop_names(text, before, ident):
    """`for (ident, …) in array { … encode_descriptor(ident, …) }`: the literals at ident's position
    in each tuple of `let array … = [ (…), … ];`."""
    loop = None
    for m in re.finditer(r"\bfor\s*\(([^)]*)\)\s*in\s*(\w+)", text[:before]):
        names = [p.strip() for p in m.group(1).split(",")]
        if ident in names:
            loop = (names.index(ident), m.group(2))
    if loop is None:
        return None
    position, array = loop
    m = None
    for m_ in re.finditer(r"\blet\s+(?:mut\s+)?" + re.escape(array) + r"\b[^=]*=\s*\[", text[:before]):
        m = m_
    if m is None:
        return None
    # Walk the array's top-level tuples.
    i, out = m.end(), []
    while True:
        while i < len(text) and text[i] in " \t\r\n,":
            i += 1
        if i >= len(text) or text[i] == "]":
            break
        if text[i] != "(":
            raise SourceError(f"metrics.rs:{line_of(text, i)}: array {array} holds something other than tuples")
        args, end = split_args(text, i)
        if position >= len(args) or string_literal(args[position]) is None:
            raise SourceError(f"metrics.rs:{line_of(text, i)}: element {position} of a tuple in {array} is not a string literal")
        out.append(string_literal(args[position]))
        i = end + 1
    return out


SUFFIXES = {"Counter": ["_total"], "Histogram": ["_bucket", "_count", "_sum"], "Gauge": [""],
            "Info": ["_info"], "Unknown": [""]}


def exported_metrics(source_path):
    """{sample name: (base name, kind, 'event'|'state')} as prometheus-client writes them."""
    raw = Path(source_path).read_text(encoding="utf-8")
    text = strip_rust_comments(raw)
    cut = text.find("#[cfg(test)]")
    if cut >= 0:
        text = text[:cut]
    if re.search(r"\bwith_prefix\s*\(|\bregister_with_unit\s*\(|\bsub_registry_with", text):
        raise SourceError("metrics.rs uses a registry prefix, unit or sub-registry: teach check_dashboard.py its naming")
    found = {}

    def add(base, kind, origin, pos):
        if not re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", base):
            raise SourceError(f"metrics.rs:{line_of(text, pos)}: {base!r} is not a metric name")
        for suffix in SUFFIXES[kind]:
            found[base + suffix] = (base, kind, origin)

    registered = 0
    for m in re.finditer(r"\.register\s*\(", text):
        args, _ = split_args(text, m.end() - 1)
        pos = m.start()
        if len(args) != 3 or string_literal(args[0]) is None:
            raise SourceError(f"metrics.rs:{line_of(text, pos)}: register() without a literal name")
        metric = args[2]
        clone = re.fullmatch(r"(\w+)\.clone\(\)", metric)
        if clone:
            metric = resolve_let(text, pos, clone.group(1)) or ""
        kind = kind_of_expression(metric)
        if kind is None:
            raise SourceError(f"metrics.rs:{line_of(text, pos)}: cannot tell the type of {args[2]!r}")
        add(string_literal(args[0]), kind, "event", pos)
        registered += 1

    described = 0
    for m in re.finditer(r"\.encode_descriptor\s*\(", text):
        args, _ = split_args(text, m.end() - 1)
        pos = m.start()
        if len(args) != 4:
            raise SourceError(f"metrics.rs:{line_of(text, pos)}: encode_descriptor() with {len(args)} arguments")
        t = re.fullmatch(r"MetricType::(\w+)", args[3])
        if not t or t.group(1) not in SUFFIXES:
            raise SourceError(f"metrics.rs:{line_of(text, pos)}: unknown metric type {args[3]!r}")
        if args[2] != "None":
            raise SourceError(f"metrics.rs:{line_of(text, pos)}: a unit ({args[2]}) changes the name; not handled")
        name = string_literal(args[0])
        names = [name] if name is not None else resolve_loop_names(text, pos, args[0])
        if not names:
            raise SourceError(f"metrics.rs:{line_of(text, pos)}: cannot resolve the name {args[0]!r}")
        for n in names:
            add(n, t.group(1), "state", pos)
            described += 1
    if registered == 0 or described == 0:
        raise SourceError(f"found {registered} register() and {described} encode_descriptor() names: the source changed shape")
    return found


# --- PromQL -----------------------------------------------------------------------------------

def metric_names(expr):
    """Metric names an expression selects (identifiers that are not functions, keywords, label
    names, durations or numbers)."""
    names = set(re.findall(r'__name__\s*=\s*"([^"]*)"', expr))
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # strings
    s = re.sub(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]", " ", s)  # Grafana variables
    s = re.sub(r"\{[^{}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\[\]]*\]", " ", s)  # ranges and subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", s)  # label lists
    s = re.sub(r"\boffset\s+-?[0-9a-z]+", " ", s)
    s = re.sub(r"(?<![A-Za-z_:0-9])(0x[0-9a-fA-F]+|\d+(\.\d*)?([eE][+-]?\d+)?(ms|[smhdwy])?)", " ", s)
    for m in re.finditer(IDENT, s):
        word = m.group(0)
        follows = s[m.end():].lstrip()[:1]
        low = word.lower()
        if follows == "(" and (word in FUNCTIONS or word in AGGREGATIONS):
            continue
        if low in KEYWORDS or word in AGGREGATIONS:
            continue
        if follows == "(":
            names.add(("function?", word))
            continue
        names.add(word)
    return names


def rate_arguments(expr):
    """Metric names directly inside rate(), irate() or increase()."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    return re.findall(r"\b(" + "|".join(RATE_FUNCTIONS) + r")\s*\(\s*(" + IDENT + r")", s)


VARIABLE = r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]"


def variables_used(expr):
    return {a or b or c for a, b, c in re.findall(VARIABLE, expr)}


def for_promtool(expr):
    """The expression with Grafana's variables replaced by what they expand to."""
    def sub(m):
        name = m.group(1) or m.group(2) or m.group(3)
        return DURATION_VARS.get(name, ".*")
    return re.sub(VARIABLE, sub, expr)


# --- the dashboard ----------------------------------------------------------------------------

def all_panels(panels):
    for p in panels:
        yield p
        yield from all_panels(p.get("panels") or [])


def uses_datasource_variable(ds, var):
    refs = {f"${var}", f"${{{var}}}", f"[[{var}]]"}
    if isinstance(ds, str):
        return ds in refs
    return isinstance(ds, dict) and ds.get("uid") in refs and ds.get("type") in (None, "prometheus")


def check(dashboard_path, source_path, list_only=False):
    problems = []
    exported = exported_metrics(source_path)
    if list_only:
        for name in sorted(exported):
            base, kind, origin = exported[name]
            print(f"{name:60} {kind.lower():9} {origin}")
        return problems

    try:
        dash = json.loads(Path(dashboard_path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        return [f"{dashboard_path}: not JSON: {e}"]
    if not isinstance(dash, dict) or not isinstance(dash.get("panels"), list) or not dash["panels"]:
        return [f"{dashboard_path}: no panels"]

    variables = {v.get("name"): v for v in (dash.get("templating") or {}).get("list", [])}
    ds_vars = [n for n, v in variables.items() if v.get("type") == "datasource" and v.get("query") == "prometheus"]
    if "datasource" not in ds_vars:
        problems.append("templating: no `datasource` variable of type datasource with query prometheus")
    ds_var = "datasource"
    exprs_vars = []  # (variable label, "query", PromQL) from query variables
    for name, v in variables.items():
        if v.get("type") != "query":
            continue
        if not uses_datasource_variable(v.get("datasource"), ds_var):
            problems.append(f"variable {name}: datasource is not ${{{ds_var}}}: {v.get('datasource')!r}")
        query = v.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        # Grafana's Prometheus variable functions: label_values(SELECTOR, label), query_result(EXPR),
        # metrics(REGEX) and label_names() (no metric to check in the last two).
        m = re.fullmatch(r"\s*(label_values|query_result)\s*\((.*)\)\s*", query or "", re.S)
        if m and m.group(1) == "label_values":
            inner = m.group(2).rsplit(",", 1)[0] if "," in m.group(2) else None
            if inner is not None:  # label_values(label) alone selects no metric
                exprs_vars.append((f"variable {name}", "query", inner))
        elif m:
            exprs_vars.append((f"variable {name}", "query", m.group(2)))

    ids = {}
    exprs = []  # (panel label, refId, expr)
    for p in all_panels(dash["panels"]):
        label = f"panel {p.get('id')} {p.get('title')!r}"
        if "id" not in p:
            problems.append(f"{label}: no id")
        elif p["id"] in ids:
            problems.append(f"{label}: id {p['id']} also used by {ids[p['id']]!r}")
        else:
            ids[p["id"]] = p.get("title")
        if p.get("type") == "row":
            continue
        if not uses_datasource_variable(p.get("datasource"), ds_var):
            problems.append(f"{label}: datasource is not ${{{ds_var}}}: {p.get('datasource')!r}")
        targets = p.get("targets") or []
        if not targets:
            problems.append(f"{label}: no targets")
        refs = set()
        for t in targets:
            ref = t.get("refId")
            if ref in refs:
                problems.append(f"{label}: refId {ref} twice")
            refs.add(ref)
            if "datasource" in t and not uses_datasource_variable(t["datasource"], ds_var):
                problems.append(f"{label} target {ref}: datasource is not ${{{ds_var}}}: {t['datasource']!r}")
            expr = t.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                problems.append(f"{label} target {ref}: no expr")
                continue
            exprs.append((label, ref, expr))

    for label, ref, expr in exprs + exprs_vars:
        where = f"{label} target {ref}" if ref != "query" else f"{label} query"
        for var in variables_used(expr):
            if var not in variables and var not in GRAFANA_BUILTINS:
                problems.append(f"{where}: ${var} is not a template variable")
        for name in sorted(metric_names(expr), key=str):
            if isinstance(name, tuple):
                problems.append(f"{where}: {name[1]}( is not a PromQL function")
            elif name not in exported and name not in SCRAPE_SERIES:
                close = difflib.get_close_matches(name, exported, n=2, cutoff=0.8)
                hint = f" (did you mean {' or '.join(close)}?)" if close else ""
                problems.append(f"{where}: metric {name} is not exported by {Path(source_path).name}{hint}")
        for func, name in rate_arguments(expr):
            info = exported.get(name)
            if info is None:
                continue  # reported above
            base, kind, origin = info
            if kind == "Counter" or (kind == "Histogram" and origin == "event"):
                continue
            what = "a scrape-time snapshot histogram" if kind == "Histogram" else f"a {kind.lower()}"
            problems.append(f"{where}: {func}({name}) — {base} is {what}; read it without {func}()")

    problems.extend(promtool_check(exprs + exprs_vars))
    return problems


def promtool_check(exprs):
    promtool = shutil.which("promtool")
    if not promtool:
        print("promtool not on PATH: PromQL syntax not checked", file=sys.stderr)
        return []
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    index = {}
    for i, (label, ref, expr) in enumerate(exprs):
        record = f"dashboard:expr_{i}"
        index[record] = (label, ref)
        lines.append(f"      - record: {record}")
        lines.append(f"        expr: {json.dumps(for_promtool(expr))}")
    with tempfile.TemporaryDirectory() as tmp:
        rules = os.path.join(tmp, "dashboard-rules.yaml")
        Path(rules).write_text("\n".join(lines) + "\n", encoding="utf-8")
        r = subprocess.run([promtool, "check", "rules", rules], capture_output=True, text=True)
    if r.returncode == 0:
        return []
    out = (r.stdout + r.stderr).strip()
    problems = []
    # promtool names the failing rule by its position ("group "dashboard", rule N, …").
    for m in re.finditer(r"rule (\d+),?[^\n]*", out):
        n = int(m.group(1)) - 1
        if 0 <= n < len(exprs):
            label, ref, _ = exprs[n]
            where = f"{label} target {ref}" if ref != "query" else f"{label} query"
            problems.append(f"{where}: promtool: {m.group(0)}")
    return problems or [f"promtool check rules failed:\n{out}"]


def main(argv):
    args = list(argv)
    source = DEFAULT_SOURCE
    list_only = "--list" in args
    if list_only:
        args.remove("--list")
    if "--source" in args:
        i = args.index("--source")
        source = Path(args[i + 1])
        del args[i:i + 2]
    if len(args) > 1 or any(a.startswith("-") for a in args):
        print(__doc__, file=sys.stderr)
        return 2
    dashboard = Path(args[0]) if args else DEFAULT_DASHBOARD
    try:
        problems = check(dashboard, source, list_only)
    except SourceError as e:
        print(f"{source}: {e}", file=sys.stderr)
        return 1
    for p in problems:
        print(p, file=sys.stderr)
    if not problems and not list_only:
        print(f"{dashboard}: ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
