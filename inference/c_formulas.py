"""The C text `inference.c_graph` writes a graph's operations in: the function's prelude (helpers
with torch's formulas), a C expression per pointwise aten operation, and the operations written
as copies through tables of positions (`MOVES`) or as reductions (`REDUCTIONS`)."""

from __future__ import annotations

import math

PRELUDE = r"""
#include <math.h>
#ifdef VECTOR_MATH  /* glibc's libmvec has these 4-8 at a time: a loop marked simd calls it */
#define VECTOR(f) __attribute__((__simd__("notinbranch"))) extern double f(double);
VECTOR(exp) VECTOR(expm1) VECTOR(log) VECTOR(log1p) VECTOR(sin) VECTOR(cos) VECTOR(tanh)
VECTOR(erf) VECTOR(erfc)
#endif
typedef %s T;
/* a call made whatever the branch (a vector call cannot sit in one), its value then picked */
static inline double sgm(double x) { return 1.0 / (1.0 + exp(-x)); }
static inline double splus(double x, double b, double th) {
    double y = log1p(exp(x * b)) / b; return x * b > th ? x : y; }
static inline double splus_bw(double g, double x, double b, double th) {
    double e = exp(x * b); return x * b > th ? g : g * e / (e + 1.0); }
static inline double lsig(double x) { return (x < 0 ? x : 0.0) - log1p(exp(-fabs(x))); }
static inline double bce(double x, double y) {
    return (1.0 - y) * x + (x < 0 ? -x : 0.0) + log1p(exp(-fabs(x))); }
static inline double xlogy(double x, double y) {
    double l = x * log(y); return isnan(y) ? NAN : (x == 0 ? 0.0 : l); }
static inline double clampv(double x, double lo, double hi) {
    return x < lo ? lo : (x > hi ? hi : x); }
static double digam(double x) {
    double r = 0.0, f, p = 3.141592653589793;
    if (x == 0) return -INFINITY;
    if (x < 0) return x == floor(x) ? NAN : digam(1.0 - x) - p / tan(p * x);
    for (; x < 10.0; x += 1.0) r -= 1.0 / x;
    f = 1.0 / (x * x);
    return r + log(x) - 0.5 / x
        - f * (1.0 / 12 - f * (1.0 / 120 - f * (1.0 / 252 - f * (1.0 / 240 - f / 132))));
}
static double trigam(double x) {  /* torch's series: 6 steps up, then to x^-7 */
    double r = 0.0, sign = 1.0, f, p = 3.141592653589793;
    if (x < 0.5) { sign = -1.0; f = sin(p * x); r = -p * p / (f * f); x = 1.0 - x; }
    for (int i = 0; i < 6; i++, x += 1.0) r += 1.0 / (x * x);
    f = 1.0 / (x * x);
    return sign * (r + (1.0 + 0.5 / x + f * (1.0 / 6 - f * (1.0 / 30 - f / 42))) / x);
}
static inline double bigger(double x, double y) { return (isnan(x) || x > y) ? x : y; }
static inline double smaller(double x, double y) { return (isnan(x) || x < y) ? x : y; }
"""
# lines of C in a function at most: a graph of more is compiled in parts side by side (the
# compiler's time grows faster than a function's length: HMM model_1's 618 lines in one
# function 2.2-2.4 s, in two or three 0.9-1.1 s, the same 19-33 us a call)
SPLIT_LINES = 300
# the graph's function (and each of its parts): z, constants, index tables, buffers, gradient,
# value
SIGNATURE = (
    "void %s(const T* restrict z, const T* restrict K, const int* restrict I, T* restrict W, "
    "T* restrict G, T* restrict V)"
)


def _pow(a, v):
    e = v[1]
    if isinstance(e, (int, float)) and not isinstance(e, bool):
        if e == 2:  # torch's own special cases, which it computes so
            return f"({a[0]} * {a[0]})"
        if e == 3:
            return f"({a[0]} * {a[0]} * {a[0]})"
        if e == 1:
            return a[0]
        if e == 0.5:
            return f"sqrt({a[0]})"
        if e == -0.5:
            return f"(1.0 / sqrt({a[0]}))"
        if e == -1:
            return f"(1.0 / {a[0]})"
        if e == -2:
            return f"(1.0 / ({a[0]} * {a[0]}))"
    return f"pow({a[0]}, {a[1]})"


def _polygamma(a, v):
    if v[0] != 1:
        raise ValueError(f"polygamma of order {v[0]}")  # the backend's Unsupported
    return f"trigam({a[1]})"


def _compare(sign):
    return lambda a, v: f"(T)({a[0]} {sign} {a[1]})"


def _unary(fn):
    return lambda a, v: f"{fn}({a[0]})"


# aten operation -> C expression of its arguments (a: C expressions, v: Python values), in the
# order of the operation's schema; torch's formula for each
POINTWISE = {
    "add.Tensor": lambda a, v: f"({a[0]} + {a[2]} * {a[1]})",
    "add.Scalar": lambda a, v: f"({a[0]} + {a[2]} * {a[1]})",
    "sub.Tensor": lambda a, v: f"({a[0]} - {a[2]} * {a[1]})",
    "sub.Scalar": lambda a, v: f"({a[0]} - {a[2]} * {a[1]})",
    "rsub.Scalar": lambda a, v: f"({a[1]} - {a[2]} * {a[0]})",
    "mul.Tensor": lambda a, v: f"({a[0]} * {a[1]})",
    "mul.Scalar": lambda a, v: f"({a[0]} * {a[1]})",
    "div.Tensor": lambda a, v: f"({a[0]} / {a[1]})",
    "div.Scalar": lambda a, v: f"({a[0]} / {a[1]})",
    "neg.default": lambda a, v: f"(-{a[0]})",
    "reciprocal.default": lambda a, v: f"(1.0 / {a[0]})",
    "rsqrt.default": lambda a, v: f"(1.0 / sqrt({a[0]}))",
    "pow.Tensor_Scalar": _pow,
    "pow.Tensor_Tensor": _pow,
    "exp.default": _unary("exp"),
    "expm1.default": _unary("expm1"),
    "log.default": _unary("log"),
    "log1p.default": _unary("log1p"),
    "sqrt.default": _unary("sqrt"),
    "tanh.default": _unary("tanh"),
    "abs.default": _unary("fabs"),
    "erf.default": _unary("erf"),
    "erfc.default": _unary("erfc"),
    "lgamma.default": _unary("lgamma"),
    "digamma.default": _unary("digam"),
    "polygamma.default": _polygamma,
    "sin.default": _unary("sin"),
    "cos.default": _unary("cos"),
    "sigmoid.default": _unary("sgm"),
    "sign.default": lambda a, v: f"(T)(({a[0]} > 0) - ({a[0]} < 0))",
    "sgn.default": lambda a, v: f"(T)(({a[0]} > 0) - ({a[0]} < 0))",
    "clamp.default": lambda a, v: "clampv({}, {}, {})".format(
        a[0], "-INFINITY" if v[1] is None else a[1], "INFINITY" if v[2] is None else a[2]
    ),
    "clamp_min.default": lambda a, v: f"clampv({a[0]}, {a[1]}, INFINITY)",
    "clamp_max.default": lambda a, v: f"clampv({a[0]}, -INFINITY, {a[1]})",
    "maximum.default": lambda a, v: f"bigger({a[0]}, {a[1]})",
    "minimum.default": lambda a, v: f"smaller({a[0]}, {a[1]})",
    "softplus.default": lambda a, v: f"splus({a[0]}, {a[1]}, {a[2]})",
    "softplus_backward.default": lambda a, v: f"splus_bw({a[0]}, {a[1]}, {a[2]}, {a[3]})",
    "sigmoid_backward.default": lambda a, v: f"({a[0]} * {a[1]} * (1.0 - {a[1]}))",
    "tanh_backward.default": lambda a, v: f"({a[0]} * (1.0 - {a[1]} * {a[1]}))",
    "log_sigmoid_forward.default": _unary("lsig"),
    "log_sigmoid_backward.default": lambda a, v: f"({a[0]} * sgm(-{a[1]}))",
    "xlogy.Tensor": lambda a, v: f"xlogy({a[0]}, {a[1]})",
    "xlogy.Scalar_Other": lambda a, v: f"xlogy({a[0]}, {a[1]})",
    "where.self": lambda a, v: f"({a[0]} != 0 ? {a[1]} : {a[2]})",
    "masked_fill.Scalar": lambda a, v: f"({a[1]} != 0 ? {a[2]} : {a[0]})",
    "masked_fill.Tensor": lambda a, v: f"({a[1]} != 0 ? {a[2]} : {a[0]})",
    "logical_and.default": lambda a, v: f"(T)({a[0]} != 0 && {a[1]} != 0)",
    "logical_or.default": lambda a, v: f"(T)({a[0]} != 0 || {a[1]} != 0)",
    "logical_not.default": lambda a, v: f"(T)({a[0]} == 0)",
    "bitwise_not.default": lambda a, v: f"(T)({a[0]} == 0)",
}
for _name, _sign in {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "eq": "==", "ne": "!="}.items():
    POINTWISE[f"{_name}.Scalar"] = POINTWISE[f"{_name}.Tensor"] = _compare(_sign)

# operations that only move values (or fill constants): a table of source positions
MOVES = {
    f"{name}.{overload}"
    for name, overload in [
        ("view", "default"),
        ("_unsafe_view", "default"),
        ("reshape", "default"),  # written by inference.gather_sums
        ("squeeze", "default"),
        ("squeeze", "dim"),
        ("squeeze", "dims"),
        ("unsqueeze", "default"),
        ("permute", "default"),
        ("transpose", "int"),
        ("t", "default"),
        ("expand", "default"),
        ("slice", "Tensor"),
        ("select", "int"),
        ("index", "Tensor"),
        ("index_select", "default"),
        ("gather", "default"),
        ("constant_pad_nd", "default"),
        ("stack", "default"),
        ("cat", "default"),
        ("slice_backward", "default"),
        ("select_backward", "default"),
        ("diagonal", "default"),
        ("diagonal_backward", "default"),
        ("flip", "default"),
        ("repeat", "default"),
        ("roll", "default"),
    ]
}
# the arguments of these that are indices (real values, never positions)
INDEX_ARGS = {"index.Tensor": "indices", "index_select.default": "index", "gather.default": "index"}
REDUCTIONS = {  # name -> (start, C statement accumulating x into a)
    "sum.dim_IntList": ("0.0", "{a} += {x};"),
    "sum.default": ("0.0", "{a} += {x};"),
    "mean.dim": ("0.0", "{a} += {x};"),
    "mean.default": ("0.0", "{a} += {x};"),
    "amax.default": ("-INFINITY", "{a} = bigger({x}, {a});"),
    "amin.default": ("INFINITY", "{a} = smaller({x}, {a});"),
}


def c_files(lines: list[str], kind: str, most: float = SPLIT_LINES) -> list[str]:
    """The C files of a graph's `lines` (T is `kind`): one whose `run` holds them all, or,
    where there are more than `most`, up to 8 of a share of them each (compiled side by side)
    and one whose `run` calls those in turn."""
    head = PRELUDE % kind
    parts = min(math.ceil(len(lines) / most), 8)
    if parts <= 1:
        return [head + SIGNATURE % "run" + " {\n" + _body(lines) + "}\n"]
    size = -(-len(lines) // parts)
    names = [f"part{k}" for k in range(-(-len(lines) // size))]
    texts = [
        head + SIGNATURE % n + " {\n" + _body(lines[k * size : (k + 1) * size]) + "}\n"
        for k, n in enumerate(names)
    ]
    declared = "".join(SIGNATURE % n + ";\n" for n in names)
    calls = "".join(f"    {n}(z, K, I, W, G, V);\n" for n in names)
    return [*texts, head + declared + SIGNATURE % "run" + " {\n" + calls + "}\n"]


def _body(lines: list[str]) -> str:
    return "".join("    " + line + "\n" for line in lines)


def literal(x) -> str:
    if isinstance(x, bool):
        return "1.0" if x else "0.0"
    x = float(x)
    if math.isnan(x):
        return "NAN"
    if math.isinf(x):
        return "INFINITY" if x > 0 else "(-INFINITY)"
    return repr(x)


__all__ = [
    "INDEX_ARGS",
    "MOVES",
    "POINTWISE",
    "PRELUDE",
    "REDUCTIONS",
    "SIGNATURE",
    "SPLIT_LINES",
    "c_files",
    "literal",
]
